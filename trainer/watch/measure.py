"""The sampled measurements of a watched step, from the model's forward hooks.

On a sampled step (and the first of each input shape) the meters are armed when the
step before ends, so the model is entered with them on: the FLOP counter (each training
forward bracketed as forward, a forward that is not training, such as a validation
under ``no_grad``, left out) and the saved-activation meter (the first training forward:
what one micro-batch holds for backward). The probe is the built-in trainer's
(profiling.py); it reads the rest at the update.
"""

from __future__ import annotations

import time

import torch

from lsml_tui.profilers.memory import SavedActivationMeter
from lsml_tui.trainer.profiling import NULL_PROBE


class Measuring:
    """A part of ``WatchedRun`` (run.py): its forward hooks and the meters they drive."""

    def _training(self, module) -> bool:
        return torch.is_grad_enabled() and module.training and self.status == "running"

    def _before_forward(self, module, args, kwargs):
        if torch.compiler.is_compiling():
            return None
        if self._training(module):
            x = next((a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), None)
            self.forward_begins(x)
        else:
            self.aside_begins()
        return None

    def _after_forward(self, module, args, output):
        if torch.compiler.is_compiling():
            return None
        if self._training(module):
            self.forward_ends()
        else:
            self.aside_ends()
        return None

    # What the forward hooks call, and a framework whose training step does not call the
    # model's own forward (Lightning's training_step) calls from its own hooks instead.

    def forward_begins(self, x) -> None:
        """A training forward of batch `x` (a tensor, or None) begins."""
        if isinstance(x, torch.Tensor) and x.dim() > 0:
            self._examples += x.shape[0]
            self._shape = tuple(x.shape)
        self._forwards += 1
        probe = self._probe
        if probe is NULL_PROBE:
            return
        if self._forwards == 1:
            probe.mark("data")
            probe.input_shape = list(self._shape or ())
            if probe.flops is not None:
                probe.flop_key = self._shape
        if probe.flops is not None:
            probe.flops.begin_forward()

    def forward_ends(self) -> None:
        if self._forwards == 1:                 # a rank's own work before any collective
            self._busy = time.perf_counter() - self._last_end
        probe = self._probe
        if probe is NULL_PROBE:
            return
        if probe.flops is not None:
            probe.flops.end_forward()
        if self._forwards == 1:
            probe.mark("forward")
            self._stop_saving()                 # one micro-batch's activations: what is held

    def aside_begins(self) -> None:
        """Work that is not training (a validation forward) begins: its FLOPs are not the
        step's."""
        if self._probe.flops is not None:
            self._probe.flops.begin_skip()

    def aside_ends(self) -> None:
        if self._probe.flops is not None:
            self._probe.flops.end_skip()

    def _arm(self) -> None:
        """The probe for the next step; on a sampled one, its meters on from now."""
        # FLOPs are counted once per input shape, on a sampled step (or the first): a loop
        # whose shapes vary (text) is not counted every step
        fresh = self.step % self.sample_every == 0 or self.profiler.flops is None
        key = (self._shape or "first") if fresh else self.profiler.flop_key
        self._probe = probe = self.profiler.probe(self.step, key)
        if probe is NULL_PROBE:
            return
        if probe.flops is not None:
            probe.input_shape = list(self._shape or ())
            probe.flops.__enter__()
        if probe.sample:
            probe.saved = self._saving = SavedActivationMeter(self.model)
            self._saving.__enter__()

    def _stop_saving(self) -> None:
        if self._saving is not None:
            self._saving.__exit__(None, None, None)
            self._saving = None

    def _disarm(self) -> None:
        self._stop_saving()
        if self._probe.flops is not None and self._probe.flops.result is None:
            try:
                self._probe.flops.__exit__(None, None, None)
            except Exception:  # noqa: BLE001 - it was never entered or already left
                pass
        self._probe = NULL_PROBE
