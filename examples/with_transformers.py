"""A Hugging Face Trainer recorded by lsml-tui: one callback. Needs transformers and
accelerate (pip install 'lsml-tui[transformers]'); the model is built from a config, so
nothing is downloaded. Run it alone or under the dashboard:

    lsml-tui run examples/with_transformers.py --steps 2000
"""

import argparse

import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

from lsml_tui.integrations.transformers import LsmlTuiCallback  # lsml-tui

p = argparse.ArgumentParser()
p.add_argument("--steps", type=int, default=500)
args = p.parse_args()

# a tiny GPT-2 learning to continue counting sequences modulo 64
config = GPT2Config(n_layer=2, n_head=4, n_embd=64, vocab_size=64, n_positions=32)
model = GPT2LMHeadModel(config)
starts = torch.randint(0, 64, (4096, 1), generator=torch.Generator().manual_seed(0))
steps = torch.randint(1, 4, (4096, 1), generator=torch.Generator().manual_seed(1))
ids = (starts + steps * torch.arange(32)) % 64
data = [{"input_ids": row, "labels": row} for row in ids]

training = TrainingArguments(output_dir="runs/hf-output", max_steps=args.steps,
                             per_device_train_batch_size=32, learning_rate=1e-3,
                             logging_steps=1,          # lsml-tui reads the loss from the logs
                             eval_strategy="steps", eval_steps=100, report_to=[],
                             save_strategy="no", max_grad_norm=1.0, disable_tqdm=True)
trainer = Trainer(model=model, args=training, train_dataset=data[:3584], eval_dataset=data[3584:],
                  callbacks=[LsmlTuiCallback()])  # lsml-tui
trainer.train()
