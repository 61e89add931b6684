"""The normalization slot every model has, swappable while training."""

from __future__ import annotations

import torch
from torch import nn


class ChannelRMSNorm(nn.Module):
    """RMS norm over (C, H, W) of an image batch with a per-channel gain: GroupNorm(1)'s RMS twin."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))

    def forward(self, x):  # (B, C, H, W)
        rms = x.pow(2).mean(dim=(1, 2, 3), keepdim=True).add(self.eps).rsqrt()
        return x * rms * self.weight[None, :, None, None]


def _groups(channels: int) -> int:
    return next(g for g in (8, 4, 2, 1) if channels % g == 0)


def make_norm(kind: str, dim: int, layout: str) -> nn.Module:
    """A fresh norm of `kind` over `dim` features ("features": (..., C)) or channels ("channels": (B, C, H, W))."""
    if kind == "none":
        return nn.Identity()
    if layout == "channels":
        return {
            "batch": lambda: nn.BatchNorm2d(dim),
            "layer": lambda: nn.GroupNorm(1, dim),   # layer norm over (C, H, W)
            "rms": lambda: ChannelRMSNorm(dim),
            "group": lambda: nn.GroupNorm(_groups(dim), dim),
        }[kind]()
    return {
        "batch": lambda: nn.BatchNorm1d(dim),        # (B, C) inputs only
        "layer": lambda: nn.LayerNorm(dim),
        "rms": lambda: nn.RMSNorm(dim, eps=1e-6),
    }[kind]()


class NormSlot(nn.Module):
    """Holds one norm module; ``set_kind`` swaps it for a fresh one (scale 1, shift 0)."""

    def __init__(self, dim: int, kind: str, layout: str = "features"):
        super().__init__()
        self.dim, self.layout, self.kind = dim, layout, kind
        self.norm = make_norm(kind, dim, layout)

    def set_kind(self, kind: str, device: torch.device) -> None:
        self.norm = make_norm(kind, self.dim, self.layout).to(device)
        self.kind = kind

    def forward(self, x):
        return self.norm(x)

    def extra_repr(self) -> str:
        return f"kind={self.kind}"


def set_norm(model: nn.Module, kind: str) -> int:
    """Swap every norm slot of `model` to `kind`; return how many slots changed."""
    device = next(model.parameters()).device
    slots = [m for m in model.modules() if isinstance(m, NormSlot)]
    for slot in slots:
        slot.set_kind(kind, device)
    return len(slots)
