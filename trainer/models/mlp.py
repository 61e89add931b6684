"""Multi-layer perceptron: (Linear -> norm -> activation -> dropout) x layers, then a linear
head."""

from __future__ import annotations

from torch import nn

from lsml_tui.trainer.models.norms import NormSlot
from lsml_tui.trainer.specs import MLPConfig

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


class Block(nn.Module):
    def __init__(self, d_in: int, d_out: int, norm: str, activation: str, dropout: float):
        super().__init__()
        self.fc = nn.Linear(d_in, d_out)
        self.norm = NormSlot(d_out, norm)
        self.act = ACTIVATIONS[activation]()
        self.drop = nn.Dropout(dropout)     # p = 0 is the identity (set_dropout changes p live)

    def forward(self, x):  # (B, d_in) -> (B, d_out)
        return self.drop(self.act(self.norm(self.fc(x))))


class MLP(nn.Module):
    def __init__(self, cfg: MLPConfig):
        super().__init__()
        self.config = cfg
        dims = [cfg.in_dim] + [cfg.width] * cfg.layers
        self.blocks = nn.Sequential(*[Block(a, b, cfg.norm, cfg.activation, cfg.dropout)
                                      for a, b in zip(dims, dims[1:])])
        self.head = nn.Linear(dims[-1], cfg.classes)

    def forward(self, x):  # (B, in_dim) -> (B, classes)
        return self.head(self.blocks(x))
