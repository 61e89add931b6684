"""A watched run: the user's model and optimizer, recorded step by step from hooks.

A step is one ``optimizer.step()`` (its step hooks count it; gradient accumulation is one
step per update). The optimizer's step pre-hook reads the gradient norms (one fused
norm, as the built-in loop) and applies commands; the post-hook ends the step, whose
values (the loss ``run.log`` gives after or before the step) are queued for reading
when the next backward begins, at the next step, or at the end. The
model's forward hooks count the batch and, on a sampled step, bracket its forward for
the FLOP counter. Measuring is armed at the end of the step before a sampled one, so
the root module is entered with the meters on (the "data" phase is the time between
two steps). Values stay on the device and are read back in order, a step late on CUDA.
"""

from __future__ import annotations

import math
import queue
import sys
import time
import traceback
from collections import deque
from pathlib import Path

import torch

from lsml_tui.profilers.system import SystemSampler
from lsml_tui.trainer.events import (Coalescer, Logged, Notice, RunFailed, RunStarted,
                                     TraceCaptured)
from lsml_tui.trainer.guard import ReadBack, grad_norms
from lsml_tui.trainer.profiling import NULL_PROBE, Profiler
from lsml_tui.trainer.record import Recorder
from lsml_tui.trainer.store.writer import RunStore
from lsml_tui.trainer.watch import seen
from lsml_tui.trainer.watch.control import WatchControls
from lsml_tui.trainer.watch.measure import Measuring
from lsml_tui.trainer.watch.ranks import Ranks, world
from lsml_tui.trainer.watches.generalization import OverfitWatch
from lsml_tui.trainer.watch.setup import (check_arguments, follow_parent, run_dir_for,
                                           stored_config)


PRECISION = {torch.float32: "fp32", torch.float64: "fp64", torch.bfloat16: "bf16",
             torch.float16: "fp16"}      # the parameters' dtype, named as the built-in runs'


class WatchedRun(Recorder, Measuring, Ranks, WatchControls):
    """``lsml_tui.watch``'s run. ``log`` after (or before) each ``optimizer.step()``;
    ``finish`` at the end (or ``with``; or leave it to the end of the script)."""

    def __init__(self, model, optimizer, name=None, config=None, runs_dir="runs",
                 sample_every: int = 100, profile: bool = True, sink=None,
                 forward_hooks: bool = True):
        check_arguments(model, optimizer, name, config, runs_dir, sample_every)
        self.rank, self.world = world()
        if self.rank != 0:                  # torchrun's other ranks: rank 0 records (ranks.py)
            profile, runs_dir = False, None
        self.model, self.optimizer = model, optimizer
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.param_names, self.params = [n for n, _ in named], [p for _, p in named]
        self.device = self.params[0].device
        self.compiled = hasattr(model, "_orig_mod")         # torch.compile's wrapper
        config_dict, toml = stored_config(model, optimizer, name, config, sample_every,
                                          self.world)
        self.label = config_dict["model"]
        self.store = None if self.rank else RunStore.create(
            runs_dir, config_dict, toml, run_dir=run_dir_for(runs_dir, self.label))
        self._asked, self._period, self._straggler = {}, [0.0, 0.0, 0], None
        self.events = Coalescer(sink or (lambda batch: None))
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self.step, self.status, self.error = 0, "running", None
        self.paused = self._single_step = self.should_stop = False
        self.lr_factor, self._scaled = 1.0, None
        self._trace = None
        self.initial_loss, self.last_grad_norm, self.clip_count = None, None, 0
        self.recent_losses: deque = deque(maxlen=10)
        self.overfit, self.last_val_loss = OverfitWatch(), None
        self.sample_every = sample_every
        self.profiler = Profiler(lambda: self.model, self.device, profile and not self.compiled,
                                 sample_every)
        self.readback = ReadBack(self.device, self.device.type == "cuda")
        self._pending: deque = deque()      # (threshold, examples, names, extras) per pushed step
        self._open: dict | None = None      # the step just taken, waiting for its loss
        self._logged: dict = {}             # values logged before the step they belong to
        self._clip: tuple | None = None     # (pre-clip norm, threshold) seen this step
        self._examples = self._last_examples = 0    # batch rows of training forwards a step
        self._forwards = 0
        self._shape = None                  # the input shape of the last training forward
        self._probe, self._saving = NULL_PROBE, None
        self._told_unmeasured = False
        self._last_end = time.perf_counter()
        self._busy = None                   # seconds from the last step to its first forward's end
        self.train_seconds = 0.0
        self._handles = [optimizer.register_step_pre_hook(self._before_update),
                         optimizer.register_step_post_hook(self._after_update),
                         # the next backward has begun: the last step's values are all in
                         self.params[0].register_post_accumulate_grad_hook(
                             lambda p: self._close_step())]
        if forward_hooks:                   # else the framework calls forward_begins/_ends
            self._handles += [
                model.register_forward_pre_hook(self._before_forward, with_kwargs=True),
                model.register_forward_hook(self._after_forward)]
        seen.attach(self)
        follow_parent()
        self.sampler = SystemSampler(self.on_system_sample).start() if profile else None
        if self.store is None:
            self._arm()
            return
        self.store.watch_commands(self.submit)
        self.emit(RunStarted(0, self.store.run_id, str(self.store.run_dir), config_dict,
                             sum(p.numel() for p in model.parameters()), str(self.device),
                             PRECISION.get(self.params[0].dtype, str(self.params[0].dtype))))
        if self.compiled:
            self.emit(Notice(0, "the model is compiled (torch.compile): FLOPs, saved "
                                "activations and per-layer stats are not measured; call watch "
                                "on the eager model, before compiling, to measure them"))
        self._arm()

    # -- the user's side --------------------------------------------------------------

    def log(self, loss=None, examples: int | None = None, **values) -> None:
        """The step's loss and any other values (tensors stay on the device until read
        back with the step); `examples` overrides the batch rows counted from the input."""
        target = self._open if self._open is not None else self._logged
        if loss is not None:
            target["loss"] = loss
        if examples is not None:
            target["examples"] = examples
        target.setdefault("values", {}).update(values)

    @property
    def run_dir(self) -> Path | None:
        """Where the run is recorded (None on a rank other than 0)."""
        return self.store.run_dir if self.store is not None else None

    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        if value is None:
            self.finish()
        else:
            self.finish_after(value)
        return False

    def finish_after(self, error: BaseException) -> None:
        """End the run because `error` stopped the script."""
        if isinstance(error, KeyboardInterrupt):
            self.finish("interrupted")
            return
        text = f"{type(error).__name__}: {error}"
        self.emit(RunFailed(self.step, text, "".join(traceback.format_exception(error))))
        self.error = text
        self.finish("failed")

    def finish(self, status: str | None = None) -> dict | None:
        """Record what is still in flight and end the run (once; later calls do nothing)."""
        if self.status != "running":
            return None
        self.status = status or ("interrupted" if self.should_stop else "finished")
        self._close_step()
        self._settle(0)
        self._disarm()
        for h in self._handles:
            h.remove()
        seen.detach(self)
        summary = self.record_end(self.sampler)
        if self.store is not None:
            self.store.close()
        return summary

    # -- hooks --------------------------------------------------------------------------

    def saw_clip(self, norm: torch.Tensor, threshold: float) -> None:
        """``clip_grad_norm_`` ran: `norm` is the norm before it clipped (seen.py)."""
        self._clip = (norm, threshold)

    def _before_update(self, optimizer, args, kwargs):
        self.drain_commands()
        self._single_step = False
        self._close_step()
        # a closure (Lightning, LBFGS) runs forward and backward inside step(): the gradients
        # are read after it, in the post-hook
        self._closure = (args[0] if args else kwargs.get("closure")) is not None
        if not self._closure:
            self._read_gradients()
        self._probe.before_update(self.params)
        if self.lr_factor != 1.0:               # the dashboard's lr, for this update only
            self._scaled = [g["lr"] for g in optimizer.param_groups]
            for g in optimizer.param_groups:
                g["lr"] = g["lr"] * self.lr_factor
        self._lrs = [float(g["lr"]) for g in optimizer.param_groups]

    def _read_gradients(self) -> None:
        """The step's gradients are all in: stop the meters, take the norms (one fused norm,
        as the built-in loop; the user's clip_grad_norm_ gave the norm before clipping)."""
        probe = self._probe
        probe.mark("backward")
        self._stop_saving()
        if probe.flops is not None:
            probe.flops.__exit__(None, None, None)
        if self._forwards == 0 and probe is not NULL_PROBE and not self._told_unmeasured:
            self._told_unmeasured = True        # the hooks never ran: compiled, or not called
            self.emit(Notice(self.step, "no forward of the watched model was seen before "
                                        "this step (compiled after watch, or called another "
                                        "way): sampled measurements are skipped"))
        if self._clip is not None and not probe.sample:    # the user's clipping measured it
            norm, threshold = self._clip[0], self._clip[1]
        else:
            per_param, norm = grad_norms(self.params)
            probe.after_backward(per_param)
            threshold = None
            if self._clip is not None:          # the user clipped: the norm before it did
                norm, threshold = self._clip[0].to(norm), self._clip[1]
        self._step_norm, self._threshold = norm, threshold

    def _after_update(self, optimizer, args, kwargs):
        if self._closure:
            self._read_gradients()
        if self._scaled is not None:            # the user's scheduler sees its own lr
            for g, lr in zip(optimizer.param_groups, self._scaled):
                g["lr"] = lr
            self._scaled = None
        probe = self._probe
        probe.mark("optimizer")
        probe.finish(self)
        now = time.perf_counter()
        seconds, self._last_end, busy = now - self._last_end, now, self._busy
        self._period[0] += seconds
        self._period[1] += busy if busy is not None else seconds
        self._period[2] += 1
        self.train_seconds += seconds
        self.profiler.observe_step_time(seconds, probed=probe is not NULL_PROBE)
        self._open = {"step": self.step, "norm": self._step_norm, "threshold": self._threshold,
                      "lrs": self._lrs, "seconds": seconds, "examples": self._examples,
                      **self._logged}
        self._last_examples = self._examples
        self._logged, self._clip, self._examples, self._forwards = {}, None, 0, 0
        if self._trace is not None:
            path = self._trace.step()
            if path is not None:
                self.emit(TraceCaptured(self.step, str(path), self._trace.steps))
                self._trace = None
        self.step += 1
        self._busy = None
        if self.world > 1 and self.step % self.sample_every == 0:
            self._exchange()                    # every rank, at this same step
        self._arm()
        self.events.poll()

    # -- read-back ---------------------------------------------------------------------

    def _close_step(self) -> None:
        """Queue the open step's values for reading (its loss is in by now)."""
        s, self._open = self._open, None
        if s is None:
            return
        extra = s.get("values") or {}
        names = list(extra)
        if self.readback.late:      # on the device, copied back while the next step runs
            values = torch.stack([_scalar(s.get("loss"), self.device), s["norm"].double()])
            stacked = torch.stack([_scalar(extra[n], self.device) for n in names]) \
                if names else None
        else:                       # on the CPU a read costs no sync: the cheapest is now
            values = [_host(s.get("loss")), float(s["norm"])]
            stacked = [_host(extra[n]) for n in names]
        self.readback.push(s["step"], s["lrs"][0], s["seconds"], values, None)
        lrs = {f"lr/{i}": lr for i, lr in enumerate(s["lrs"])} if len(s["lrs"]) > 1 else {}
        self._pending.append((s["threshold"], s.get("examples") or 0, names, stacked, lrs))
        self._settle()

    def _settle(self, keep: int | None = None) -> None:
        for entry in self.readback.ready(keep):
            threshold, examples, names, stacked, lrs = self._pending.popleft()
            loss, norm = entry.host if isinstance(entry.host, list) else entry.host.tolist()
            clipped = threshold is not None and norm > threshold
            scale = self.record_clip(entry.step, norm, threshold) if clipped else 1.0
            self.record_step(entry.step, loss, entry.lr, norm, norm * scale, clipped,
                             examples / entry.seconds if entry.seconds > 0 else 0.0)
            if names and not isinstance(stacked, list):
                stacked = stacked.tolist()
            values = dict(zip(names, stacked)) if names else {}
            if "val_loss" in values:            # the user's validation: the loss panel's line
                self.record_validation(entry.step, values.pop("val_loss"))
            if values or lrs:
                self.emit_sample(Logged(entry.step, {**values, **lrs}))

    def summary(self) -> dict:
        return {
            "run_id": self.store and self.store.run_id,
            "run_dir": self.store and str(self.store.run_dir), "world_size": self.world,
            "status": self.status, "steps": self.step, "watched": True,
            "script": sys.argv[0] if sys.argv else None,
            "params": sum(p.numel() for p in self.model.parameters()),
            "device": str(self.device), "model": self.label,
            "optimizer": type(self.optimizer).__name__.lower(),
            "lr": float(self.optimizer.param_groups[0]["lr"]),
            "initial_train_loss": self.initial_loss,
            "final_train_loss": self.recent_train_loss(),
            "final_val_loss": self.last_val_loss, "overfitting_step": self.overfit.fired_at,
            "last_grad_norm": self.last_grad_norm, "clip_events": self.clip_count,
            "steps_per_second": self.step / self.train_seconds if self.train_seconds else None,
            **({"error": self.error} if self.error else {}),
            **self.profiler.summary(),
        }


def _host(value) -> float:
    """A logged value as a Python float (NaN when missing), read at once (on the CPU)."""
    if isinstance(value, torch.Tensor):
        return value.detach().reshape(()).item()
    return math.nan if value is None else float(value)


def _scalar(value, device) -> torch.Tensor:
    """A logged value as a float64 scalar on the device, not read (NaN when missing)."""
    if isinstance(value, torch.Tensor):
        return value.detach().reshape(()).to(device, torch.float64)
    return torch.tensor(math.nan if value is None else float(value), dtype=torch.float64,
                        device=device)
