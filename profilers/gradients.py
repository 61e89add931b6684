"""Per-parameter gradient norms and update-to-weight ratios, with fused foreach kernels."""

from __future__ import annotations

import math

import torch

from lsml_tui.profilers.memory import local_part


def grad_norms(params: list[torch.Tensor]) -> torch.Tensor:
    """L2 norm of each parameter's gradient, one fused call; stays on the device (no sync)."""
    grads = [p.grad if p.grad is not None else p.new_zeros(()) for p in params]
    return torch.stack(torch._foreach_norm(grads))


def snapshot(params: list[torch.Tensor]) -> list[torch.Tensor]:
    """Copies of the weights before an update (sampled steps only)."""
    return torch._foreach_mul([local_part(p.detach()) for p in params], 1.0)


def update_ratios(before: list[torch.Tensor], params: list[torch.Tensor]) -> torch.Tensor:
    """||w_after - w_before|| / ||w_before|| per parameter (of this rank's shard when the
    weights are sharded); on the device."""
    after = [local_part(p.detach()) for p in params]
    deltas = torch._foreach_sub(after, before)
    return torch.stack(torch._foreach_norm(deltas)) / torch.stack(torch._foreach_norm(before)).clamp_min(1e-12)


def first_nonfinite(names: list[str], norms: list[float]) -> str | None:
    """The first parameter, in module order, whose gradient norm is NaN or Inf (a gradient
    holding a NaN or an Inf has a non-finite norm)."""
    return next((name for name, v in zip(names, norms) if not math.isfinite(v)), None)
