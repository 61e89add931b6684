"""Averaged weights (--average polyak | ema:DECAY): Polyak-Ruppert and exponential averages.

The copy is ``torch.optim.swa_utils.AveragedModel`` and the update is torch's own
``get_swa_multi_avg_fn`` (w_avg += (w - w_avg) / (n + 1), the running mean of every
iterate) or ``get_ema_multi_avg_fn(decay)`` (w_avg += (1 - decay)(w - w_avg)), both one
fused ``_foreach_lerp_``. The count n is kept on the host and handed to the update as a
number: ``AveragedModel.update_parameters`` reads its own counter tensor (``bool(n == 0)``)
and copies it to the GPU on every call, a host sync per step that a CUDA run must not pay.
Buffers (BatchNorm's running statistics) are averaged with the weights.
"""

from __future__ import annotations

import itertools

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn, get_swa_multi_avg_fn


def parse_average(text: str) -> tuple[str, float | None]:
    """'polyak' -> ('polyak', None); 'ema:0.99' -> ('ema', 0.99). Validated in validate.py."""
    kind, _, decay = text.partition(":")
    return kind, float(decay) if decay else None


class WeightAverage:
    def __init__(self, model: torch.nn.Module, spec: str):
        self.spec = spec
        kind, decay = parse_average(spec)
        self.update_fn = get_swa_multi_avg_fn() if kind == "polyak" else get_ema_multi_avg_fn(decay)
        self.averaged = AveragedModel(model, multi_avg_fn=self.update_fn, use_buffers=True)
        self.model = self.averaged.module               # evaluate this one
        self.count = 0                                  # updates averaged so far

    def _tensors(self, model: torch.nn.Module) -> list[torch.Tensor]:
        return [t.detach() for t in itertools.chain(model.parameters(), model.buffers())
                if t.is_floating_point()]

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """Fold the model's current weights in (after each update)."""
        mine, theirs = self._tensors(self.model), self._tensors(model)
        if self.count == 0:
            torch._foreach_copy_(mine, theirs)
        else:
            self.update_fn(mine, theirs, self.count)
        self.count += 1
