"""A plain PyTorch training loop, watched by lsml-tui: a small MLP learns to sort points
into classes. Run it alone (python examples/plain.py), or under the dashboard:

    lsml-tui run examples/plain.py --steps 5000

The only lsml-tui lines are the ones marked ``# lsml-tui``.
"""

import argparse

import torch
from torch import nn

import lsml_tui  # lsml-tui

p = argparse.ArgumentParser()
p.add_argument("--steps", type=int, default=2000)
p.add_argument("--lr", type=float, default=3e-3)
p.add_argument("--batch", type=int, default=128)
args = p.parse_args()

torch.manual_seed(0)
# the data: 4096 points in 32 dimensions, labelled by a random teacher network
x = torch.randn(4096, 32)
teacher = nn.Sequential(nn.Linear(32, 64), nn.Tanh(), nn.Linear(64, 10))
with torch.no_grad():
    y = teacher(x).argmax(1)
train_x, train_y, val_x, val_y = x[:3584], y[:3584], x[3584:], y[3584:]

model = nn.Sequential(nn.Linear(32, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                      nn.Linear(256, 10))
optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.steps)

with lsml_tui.watch(model, optimizer, config=vars(args)) as run:  # lsml-tui
    for step in range(args.steps):
        i = torch.randint(0, len(train_x), (args.batch,))
        logits = model(train_x[i])
        loss = nn.functional.cross_entropy(logits, train_y[i])
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        accuracy = (logits.argmax(1) == train_y[i]).float().mean()
        run.log(loss=loss, accuracy=accuracy)  # lsml-tui
        if step % 100 == 0:
            model.eval()
            with torch.no_grad():
                val_loss = nn.functional.cross_entropy(model(val_x), val_y)
            model.train()
            run.log(val_loss=val_loss)  # lsml-tui
            print(f"step {step}: loss {loss.item():.4f}, val {val_loss.item():.4f}")
        if run.should_stop:  # lsml-tui: the dashboard's stop
            break
