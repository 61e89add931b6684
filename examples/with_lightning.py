"""A Lightning module recorded by lsml-tui: one callback. Needs pytorch-lightning
(pip install 'lsml-tui[lightning]'). Run it alone or under the dashboard:

    lsml-tui run examples/with_lightning.py --steps 3000
"""

import argparse

import pytorch_lightning as pl
import torch
from torch import nn

from lsml_tui.integrations.lightning import LsmlTuiCallback  # lsml-tui

p = argparse.ArgumentParser()
p.add_argument("--steps", type=int, default=1000)
p.add_argument("--lr", type=float, default=1e-3)
args = p.parse_args()


class Classifier(pl.LightningModule):
    """A small CNN on 16x16 random-pattern images it makes itself."""

    def __init__(self, lr: float):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                 nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                 nn.Flatten(), nn.Linear(32 * 4 * 4, 4))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self.net(x), y))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def images(n: int, seed: int):
    """Four classes: a bright row, column, diagonal or centre square, in noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    x = 0.5 * torch.randn(n, 1, 16, 16, generator=g)
    r = torch.randint(2, 14, (n,), generator=g)
    for i in range(n):
        k = r[i]
        if y[i] == 0:
            x[i, 0, k] += 2
        elif y[i] == 1:
            x[i, 0, :, k] += 2
        elif y[i] == 2:
            x[i, 0].diagonal().add_(2)
        else:
            x[i, 0, 6:10, 6:10] += 2
    return torch.utils.data.TensorDataset(x, y)


train = torch.utils.data.DataLoader(images(4096, 0), batch_size=64, shuffle=True)
val = torch.utils.data.DataLoader(images(512, 1), batch_size=256)
trainer = pl.Trainer(max_steps=args.steps, accelerator="auto", logger=False,
                     enable_checkpointing=False, gradient_clip_val=1.0,
                     val_check_interval=100, check_val_every_n_epoch=None,
                     callbacks=[LsmlTuiCallback()])  # lsml-tui
trainer.fit(Classifier(args.lr), train, val)
