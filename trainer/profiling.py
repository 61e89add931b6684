"""Live profiling in the loop: which step is measured, and how results leave.

``Profiler.probe(step, x)`` hands the loop a probe for one step. On most steps
it is ``NULL_PROBE``, whose methods do nothing. On a sampled step (every
``sample_every``) it times the phases, hooks saved tensors, reads per-layer
gradient norms and update ratios, and reads everything back in one go. When
the input shape or the normalization is new, the step also runs under the FLOP
counter (once; the result is cached).
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from lsml_tui.profilers import gradients
from lsml_tui.profilers.flops import FlopMeter
from lsml_tui.profilers.memory import SavedActivationMeter, memory_breakdown
from lsml_tui.profilers.peaks import cpu_peak, peak_flops
from lsml_tui.profilers.timing import PhaseTimer
from lsml_tui.trainer.events import FlopTable, LayerStats, MemorySample, TimingSample
from lsml_tui.trainer.optim.optimizers import local


class NullProbe:
    """What an unmeasured step gets: every hook is a no-op."""

    eager = False           # may run the compiled model (--compile)
    sample = False          # a sampled step (timing, saved activations, per-layer stats)
    flops = None            # the FLOP meter, on a step that counts FLOPs
    saved = None            # the saved-activation meter, on a sampled step

    def mark(self, phase: str) -> None:
        pass

    def counting(self, x):
        return nullcontext()

    def saving(self):
        return nullcontext()

    def end_forward(self) -> None:
        pass

    def after_backward(self, grad_norms) -> None:
        pass

    def before_update(self, params) -> None:
        pass

    def finish(self, trainer) -> None:
        pass


NULL_PROBE = NullProbe()


class Probe(NullProbe):
    eager = True            # module and saved-tensor hooks, FLOP counting: the eager model

    def __init__(self, profiler: "Profiler", step: int, sample: bool, flop_key):
        self.p, self.step, self.sample, self.flop_key = profiler, step, sample, flop_key
        self.flops = FlopMeter() if flop_key is not None else None
        self.saved = None
        self.timer = PhaseTimer(profiler.device)
        if sample:
            if profiler.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(profiler.device)
            self.timer.start()

    def mark(self, phase: str) -> None:
        if self.sample:
            self.timer.mark(phase)

    def counting(self, x):
        if self.flops is None:
            return nullcontext()
        self.input_shape = list(x.shape)
        return self.flops

    def saving(self):
        if not self.sample:
            return nullcontext()
        self.saved = SavedActivationMeter(self.p.model())
        return self.saved

    def end_forward(self) -> None:
        if self.flops is not None:
            self.flops.end_forward()

    def after_backward(self, grad_norms) -> None:
        if self.sample:
            self.norms = grad_norms                         # per parameter, before clipping

    def before_update(self, params) -> None:
        if self.sample:
            self.before = gradients.snapshot(params)

    def finish(self, trainer) -> None:
        p = self.p
        if self.flops is not None and self.flops.result is not None:
            p.flops, p.flop_key = self.flops.result, self.flop_key
            trainer.emit_sample(FlopTable(self.step, p.flops.forward, p.flops.backward,
                                           {k: list(v) for k, v in p.flops.per_module.items()},
                                           self.input_shape))
        if not self.sample:
            return
        ratios = gradients.update_ratios(self.before, trainer.params)
        phases = self.timer.result()
        # One read-back for everything sampled (a single device sync on GPU).
        norms, ratios = torch.stack([self.norms.float(), ratios.float()]).tolist()
        names = trainer.param_names
        saved = dict(self.saved.by_module) if self.saved else {}
        total_saved = sum(saved.values())
        p.peak_saved = max(p.peak_saved, total_saved)
        mem = memory_breakdown(trainer.model, local(trainer.optimizer).state, total_saved)
        p.memory = mem
        cuda_peak = (torch.cuda.max_memory_allocated(p.device) if p.device.type == "cuda"
                     else None)
        trainer.emit_sample(LayerStats(self.step, names, norms, ratios, saved))
        trainer.emit_sample(MemorySample(self.step, **mem, cuda_peak_bytes=cuda_peak))
        trainer.emit_sample(TimingSample(self.step, phases, p.step_seconds,
                                          p.flops_per_second(), p.mfu()))


class Profiler:
    """Decides what each step measures and keeps the latest results for the summary."""

    def __init__(self, model_fn, device: torch.device, enabled: bool, sample_every: int,
                 mode: str = "fp32"):
        self.model, self.device = model_fn, device
        self.enabled, self.every = enabled, sample_every
        self.flops = None
        self.flop_key = None
        self.peak_saved = 0
        self.memory: dict = {}
        self.step_seconds: float | None = None   # moving average of unmeasured steps
        self.mode = mode                         # the math mode MFU is measured against
        self.peak = peak_flops(device, mode) if enabled else None

    def probe(self, step: int, norm: str) -> NullProbe:
        """The probe for `step`; FLOPs are recounted when the norm (the model) changes.

        The batch shape is fixed for a run, so the norm is the whole cache key.
        """
        if not self.enabled:
            return NULL_PROBE
        key = norm
        count = key != self.flop_key
        sample = step % self.every == 0
        if not (count or sample):
            return NULL_PROBE
        return Probe(self, step, sample, key if count else None)

    def observe_step_time(self, seconds: float, probed: bool) -> None:
        """Feed the moving average with steps that measuring did not slow down."""
        if probed:
            return
        self.step_seconds = seconds if self.step_seconds is None else (
            0.9 * self.step_seconds + 0.1 * seconds)

    def flops_per_second(self) -> float | None:
        if self.flops is None or not self.step_seconds:
            return None
        return self.flops.total / self.step_seconds

    def mfu(self) -> float | None:
        achieved = self.flops_per_second()
        if achieved and self.peak and achieved > self.peak and self.device.type == "cpu":
            self.peak = cpu_peak(self.mode, at_least=achieved)  # a peak measured under load
        return achieved / self.peak if achieved and self.peak else None

    def summary(self) -> dict:
        return {
            "flops_forward_per_step": self.flops.forward if self.flops else None,
            "flops_backward_per_step": self.flops.backward if self.flops else None,
            "achieved_flops_per_second": self.flops_per_second(),
            "peak_flops_per_second": self.peak,
            "mfu": self.mfu(),
            "peak_saved_activation_bytes": self.peak_saved if self.enabled else None,
            "param_bytes": self.memory.get("param_bytes"),
            "grad_bytes": self.memory.get("grad_bytes"),
            "optimizer_state_bytes": self.memory.get("optimizer_state_bytes"),
        }
