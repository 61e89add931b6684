"""The Lightning and Hugging Face callbacks, on the real packages: each records a run whose
losses are the framework's own, with clipping seen, and the dashboard's stop ends it."""

import pytest
import torch
from torch import nn

from lsml_tui.trainer import commands as C
from lsml_tui.trainer.store.reader import list_runs, open_run


def data(n=64, d=8):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g)
    return x, x.sum(1, keepdim=True)


def test_lightning_records_the_fit_with_its_losses_and_clips(tmp_path):
    pl = pytest.importorskip("pytorch_lightning")
    from lsml_tui.integrations.lightning import LsmlTuiCallback

    class Regression(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.save_hyperparameters({"width": 8})
            self.net = nn.Linear(8, 1)
            self.losses, self.validated = [], []

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = nn.functional.mse_loss(self.net(x), y)
            self.losses.append(loss.item())
            return loss

        def validation_step(self, batch, batch_idx):
            x, y = batch
            self.log("val_loss", nn.functional.mse_loss(self.net(x), y))

        def on_validation_epoch_end(self):
            if not self.trainer.sanity_checking:    # after the update of step global_step - 1
                self.validated.append(self.global_step - 1)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    x, y = data()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    module, callback = Regression(), LsmlTuiCallback(runs_dir=tmp_path, sample_every=5)
    trainer = pl.Trainer(max_steps=12, accelerator="cpu", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, gradient_clip_val=0.5,
                         val_check_interval=6, default_root_dir=tmp_path,
                         callbacks=[callback])
    trainer.fit(module, loader, loader)
    (info,) = list_runs(tmp_path)
    assert (info.status, info.steps, info.model) == ("finished", 12, "Regression")
    assert info.config["user"] == {"width": 8}                  # the module's hparams
    with open_run(info.run_dir) as r:
        steps, clips, val = r.steps(), r.clips(), r.val()
        flops = r.samples("FlopTable")
    assert steps["loss"] == pytest.approx(module.losses, rel=1e-6)
    clipped = [s for s, n in zip(steps["step"], steps["grad_norm"]) if n > 0.5]
    assert clips["step"] == clipped and set(clips["threshold"]) == {0.5}
    assert val["step"] == module.validated and module.validated[0] == 5    # every 6 steps
    # Linear(8, 1) on a batch of 8: forward 2 * 8 * 8 * 1 = 128; backward, the weight's only
    assert (flops[0]["forward"], flops[0]["backward"]) == (128, 128)


def test_lightning_stops_when_the_dashboard_says_so(tmp_path):
    pl = pytest.importorskip("pytorch_lightning")
    from lsml_tui.integrations.lightning import LsmlTuiCallback

    class Stopper(LsmlTuiCallback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == 3:
                self.run.submit(C.Stop())          # what the dashboard's stop sends
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Linear(8, 1)

        def training_step(self, batch, batch_idx):
            return nn.functional.mse_loss(self.net(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    x, y = data()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    trainer = pl.Trainer(max_steps=1000, accelerator="cpu", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path,
                         callbacks=[Stopper(runs_dir=tmp_path)])
    trainer.fit(Tiny(), loader)
    (info,) = list_runs(tmp_path)
    # the stop is queued after step 2 (global_step 3) and applied at step 3's update
    assert info.status == "interrupted" and info.steps == 4 and trainer.global_step == 4


def test_transformers_records_the_training_with_its_logged_losses(tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from lsml_tui.integrations.transformers import LsmlTuiCallback

    config = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=32,
                                      n_positions=16)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config)           # built here: nothing downloaded
    ids = torch.randint(0, 32, (32, 16), generator=torch.Generator().manual_seed(1))
    dataset = [{"input_ids": row, "labels": row} for row in ids]
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "hf"), max_steps=6, per_device_train_batch_size=4,
        logging_steps=1, report_to=[], use_cpu=True, save_strategy="no",
        disable_tqdm=True, max_grad_norm=0.1, learning_rate=1e-3)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=dataset,
                                   callbacks=[LsmlTuiCallback(runs_dir=tmp_path / "runs",
                                                              sample_every=3)])
    trainer.train()
    (info,) = list_runs(tmp_path / "runs")
    assert (info.status, info.steps, info.model) == ("finished", 6, "GPT2LMHeadModel")
    logged = [e for e in trainer.state.log_history if "loss" in e]
    with open_run(info.run_dir) as r:
        steps, clips = r.steps(), r.clips()
        flops = r.samples("FlopTable")
    assert steps["loss"] == pytest.approx([e["loss"] for e in logged], rel=1e-4)
    assert steps["grad_norm"] == pytest.approx([e["grad_norm"] for e in logged], rel=1e-4)
    assert clips["step"] == [s for s, n in zip(steps["step"], steps["grad_norm"]) if n > 0.1]
    assert flops and flops[0]["input_shape"] == [4, 16] and flops[0]["backward"] > 0


def test_a_missing_framework_says_how_to_install_it(tmp_path):
    import subprocess
    import sys
    code = ("import sys; sys.modules['lightning'] = None; sys.modules['pytorch_lightning'] = "
            "None; import lsml_tui.integrations.lightning")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "pip install 'lsml-tui[lightning]'" in proc.stderr.splitlines()[-1]
