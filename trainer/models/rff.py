"""Random Fourier features (Rahimi & Recht, 2007): a fixed random Gaussian layer and cosine
features, only the linear readout trained; "manual engineering" beside the MLP that learns
its features itself, on the same task.

z(x) = sqrt(2/D) cos(W x + b), W ~ N(0, 1/sigma^2), b ~ U[0, 2 pi): z(x).z(y) approximates
the Gaussian kernel exp(-|x - y|^2 / 2 sigma^2), so the readout is a kernel machine. W and b
are parameters with requires_grad off: they are held in memory like any weight, but autograd
records nothing before the readout, so they get no gradient, cost no backward FLOPs and
save nothing for backward.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lsml_tui.trainer.specs import RFFConfig


class RandomFeatures(nn.Module):
    def __init__(self, d_in: int, features: int, sigma: float):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(features, d_in) / sigma, requires_grad=False)
        self.bias = nn.Parameter(2 * math.pi * torch.rand(features), requires_grad=False)
        self.scale = math.sqrt(2 / features)

    def forward(self, x):  # (B, d_in) -> (B, D)
        return self.scale * torch.cos(nn.functional.linear(x, self.weight, self.bias))


class RFF(nn.Module):
    def __init__(self, cfg: RFFConfig):
        super().__init__()
        self.config = cfg
        self.features = RandomFeatures(cfg.in_dim, cfg.width, cfg.sigma)
        self.head = nn.Linear(cfg.width, cfg.classes)

    def forward(self, x):  # (B, in_dim) -> (B, classes)
        return self.head(self.features(x))
