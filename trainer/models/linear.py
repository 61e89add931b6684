"""Least squares, f(w) = |Xw - y|^2 / 2N: the convex family whose constants are exact."""

from __future__ import annotations

from torch import nn

from lsml_tui.trainer.specs import LinearConfig


class Linear(nn.Module):
    def __init__(self, cfg: LinearConfig):
        super().__init__()
        self.config = cfg
        self.w = nn.Linear(cfg.dim, 1, bias=False)
        nn.init.zeros_(self.w.weight)           # w_0 = 0, the textbook start

    def forward(self, x):  # (B, dim) -> (B, 1)
        return self.w(x)
