"""An update guarded on the device, and step values read back a step late.

On CUDA an ordinary step never waits for the GPU. The loss and the gradient
norm are copied into pinned host memory behind a CUDA event and read when the
next step has been queued, so the GPU always has a step of work ahead of it.
The update cannot wait for that read, so it guards itself on the device:

- clipping multiplies every gradient by min(1, clip / (norm + 1e-6)) (the
  factor ``clip_grads_with_norm_`` uses), a multiply with no branch;
- the same kernel (the one ``GradScaler`` runs) sets ``found_inf`` if any
  gradient holds a NaN or an Inf, and a fused optimizer (Adam, AdamW, SGD,
  Adagrad with ``fused=True``) skips its whole update on the device when it is
  set, the way it does for ``GradScaler``. An unfused optimizer has no such
  input and reads the flag instead (one sync, as ``GradScaler`` does for it).

``found_inf`` is sticky: once set it skips every update queued after it until
the host has read the bad step and cleared it, so a step the host has not yet
seen can never build on one it will refuse. A NaN or Inf loss makes its
gradients NaN too (backward of NaN is NaN), so one flag covers both.
"""

from __future__ import annotations

import math
from collections import deque
from typing import NamedTuple

import numpy as np
import torch

from lsml_tui.profilers import gradients
from lsml_tui.trainer.optim.optimizers import parts


def grad_norms(params: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-parameter gradient L2 norms (K,), 0 where none; their global L2 norm ()), on the
    device: what ``get_total_norm`` computes, keeping the per-parameter norms (profiled,
    and naming the culprit of a NaN)."""
    per = gradients.grad_norms(params)
    return per, torch.linalg.vector_norm(per)


def fused(optimizer) -> bool:
    """True when every part of `optimizer` can skip its update on the device."""
    return all(getattr(opt, "_step_supports_amp_scaling", False) for opt in parts(optimizer))


class Guard:
    def __init__(self, device: torch.device):
        self.found_inf = torch.zeros((), device=device)     # 1.0: skip updates until cleared
        self.one = torch.ones((), device=device)              # (the kernel takes fp32 factors)

    def clip_and_check(self, grads: list[torch.Tensor], norm: torch.Tensor,
                       clip: float | None) -> None:
        """Scale the gradients by the clip factor and flag a NaN or Inf among them."""
        coef = (clip / (norm + 1e-6)).clamp(max=1.0).float() if clip is not None else self.one
        try:
            torch._amp_foreach_non_finite_check_and_unscale_(grads, self.found_inf, coef)
        except NotImplementedError:             # a device without the kernel: the same, in two
            torch.maximum(self.found_inf, (~torch.isfinite(norm)).float(), out=self.found_inf)
            torch._foreach_mul_(grads, coef)

    def clip_read(self, grads: list[torch.Tensor], norm: float, clip: float | None) -> None:
        """``clip_and_check`` for float32 gradients whose norm is already read back (the CPU,
        where reading is free): a finite norm means finite gradients, and an unclipped step
        multiplies nothing, so most steps launch no kernel here. The factor is float32
        arithmetic, as the tensor's, so both paths give the same bits."""
        if not math.isfinite(norm):
            self.found_inf.fill_(1.0)
        elif clip is not None:
            # torch's clip / t is t.reciprocal() * clip: two float32 roundings, kept here
            coef = (np.float32(1) / (np.float32(norm) + np.float32(1e-6))) * np.float32(clip)
            if coef < 1.0:
                torch._foreach_mul_(grads, float(coef))

    def step(self, optimizer) -> None:
        """The optimizer's update, unless ``found_inf`` is set."""
        for opt in parts(optimizer):
            if getattr(opt, "_step_supports_amp_scaling", False):
                opt.found_inf = self.found_inf               # read by the fused kernel
                try:
                    opt.step()
                finally:
                    del opt.found_inf
            elif not self.found_inf.item():                 # unfused: a sync, here only
                opt.step()

    def clear(self) -> None:
        self.found_inf.zero_()


class Pending(NamedTuple):
    step: int
    lr: float
    seconds: float              # host time of the step
    host: torch.Tensor | list   # [loss, norm, ...] once the copy has landed (floats if read)
    event: object               # a CUDA event after the copy, or None
    per_param: torch.Tensor     # per-parameter gradient norms on the device, to name a culprit


class ReadBack:
    """Values of queued steps, handed back in order once they have reached the host.

    ``late`` keeps the newest step pending until the next one is queued (CUDA,
    or a test of the logic on CPU); otherwise every step is read at once.
    """

    def __init__(self, device: torch.device, late: bool):
        self.cuda = device.type == "cuda"
        self.late = late
        self.queue: deque[Pending] = deque()
        slots = 3 if self.cuda and late else 0     # newest in flight, one being read, one spare
        self._buffers = [torch.empty(4, dtype=torch.float64, pin_memory=True)
                         for _ in range(slots)]
        self._next = 0

    def push(self, step: int, lr: float, seconds: float, values: torch.Tensor | list,
             per_param: torch.Tensor) -> None:
        """Queue a copy of `values` ([loss, norm, ...] on the device, float64, at most 4)
        without waiting for it; floats already read are queued as they are."""
        event = None
        if self._buffers:
            host = self._buffers[self._next][:len(values)]
            self._next = (self._next + 1) % len(self._buffers)
            host.copy_(values, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
        else:
            host = values
        self.queue.append(Pending(step, lr, seconds, host, event, per_param))

    def ready(self, keep: int | None = None):
        """Pop the entries that may be read now, oldest first, waiting for all but the newest
        `keep` (1 when late, 0 otherwise); ``ready(keep=0)`` drains everything."""
        keep = (1 if self.late else 0) if keep is None else keep
        while len(self.queue) > keep:
            entry = self.queue.popleft()
            if entry.event is not None:
                entry.event.synchronize()           # a step older than the newest: done or nearly
            yield entry

    def discard(self) -> list[Pending]:
        """Forget the steps still queued (the guard skipped their updates)."""
        dropped = list(self.queue)
        self.queue.clear()
        return dropped
