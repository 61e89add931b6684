"""Recurrent net with hand-written rnn/gru/lstm cells, so a norm can sit inside the recurrence.

The norm normalizes each time step's recurrent pre-activations W_h h_{t-1}
(all gates together), as in layer-normalized LSTMs (Ba et al., 2016). The
input projection W_x x is computed for all steps at once. Writing the cells by
hand also keeps the arithmetic in plain matmuls that every device's FLOP
counter sees.
"""

from __future__ import annotations

import torch
from torch import nn

from lsml_tui.trainer.models.norms import NormSlot
from lsml_tui.trainer.specs import RNNConfig

GATES = {"rnn": 1, "gru": 3, "lstm": 4}


class RecurrentLayer(nn.Module):
    def __init__(self, cell: str, d_in: int, hidden: int, norm: str):
        super().__init__()
        self.cell, self.hidden = cell, hidden
        g = GATES[cell]
        self.ih = nn.Linear(d_in, g * hidden)
        self.hh = nn.Linear(hidden, g * hidden, bias=cell == "gru")  # GRU keeps b_hn inside r*(.)
        self.norm = NormSlot(g * hidden, norm)

    def forward(self, x):  # (B, T, d_in) -> (B, T, H)
        B, T, _ = x.shape
        xs = self.ih(x)  # (B, T, G*H), every step's input projection at once
        h = x.new_zeros(B, self.hidden)
        c = x.new_zeros(B, self.hidden)
        out = []
        for t in range(T):
            gx, gh = xs[:, t], self.norm(self.hh(h))  # (B, G*H) each
            if self.cell == "rnn":
                h = torch.tanh(gx + gh)
            elif self.cell == "gru":
                xr, xz, xn = gx.chunk(3, dim=1)
                hr, hz, hn = gh.chunk(3, dim=1)
                r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
                n = torch.tanh(xn + r * hn)
                h = (1 - z) * n + z * h
            else:
                i, f, g, o = (gx + gh).chunk(4, dim=1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
            out.append(h)
        return torch.stack(out, dim=1)


class RNN(nn.Module):
    def __init__(self, cfg: RNNConfig):
        super().__init__()
        self.config = cfg
        dims = [cfg.in_dim] + [cfg.width] * cfg.layers
        self.layers = nn.ModuleList([RecurrentLayer(cfg.cell, a, b, cfg.norm)
                                     for a, b in zip(dims, dims[1:])])
        self.head = nn.Linear(cfg.width, cfg.out_dim)

    def forward(self, x):  # (B, T, in_dim) -> (B, out_dim), read from the last step
        for layer in self.layers:
            x = layer(x)
        return self.head(x[:, -1])
