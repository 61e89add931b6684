"""Convolutional net: (conv3x3 -> norm -> ReLU -> dropout -> optional 2x2 pool) x layers, global
pool, head."""

from __future__ import annotations

from torch import nn

from lsml_tui.trainer.models.norms import NormSlot
from lsml_tui.trainer.specs import CNNConfig


class ConvBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, norm: str, pool: bool, residual: bool,
                 dropout: float):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size=3, padding=1)
        self.norm = NormSlot(c_out, norm, layout="channels")
        self.act = nn.ReLU()
        self.drop = nn.Dropout(dropout)     # each activation alike; p = 0 is the identity
        self.residual = residual and c_in == c_out  # the stem changes channels: no skip there
        self.pool = nn.MaxPool2d(2) if pool else nn.Identity()

    def forward(self, x):  # (B, C_in, H, W) -> (B, C_out, H', W')
        y = self.drop(self.act(self.norm(self.conv(x))))
        if self.residual:
            y = y + x
        return self.pool(y)


class CNN(nn.Module):
    def __init__(self, cfg: CNNConfig):
        super().__init__()
        self.config = cfg
        blocks, size, c_in = [], cfg.image_size, 1
        for _ in range(cfg.layers):
            pool = size >= 4  # halve the image while it is at least 4 pixels wide
            blocks.append(ConvBlock(c_in, cfg.width, cfg.norm, pool, cfg.residual, cfg.dropout))
            size, c_in = (size // 2 if pool else size), cfg.width
        self.blocks = nn.Sequential(*blocks)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(cfg.width, cfg.classes)

    def forward(self, x):  # (B, 1, S, S) -> (B, classes)
        return self.head(self.gap(self.blocks(x)).flatten(1))
