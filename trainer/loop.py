"""The training loop: commands applied between steps, events out, every step recorded."""

from __future__ import annotations

import math
import os
import queue
import time
import traceback
from collections import deque

import torch

from . import specs
from .config import ConfigError, RunConfig
from .data import build_task
from .distributed import Alone, data_seed
from .divergence import BlowUpWatch
from .guard import Guard, ReadBack, grad_norms
from lsml_tui.profilers.system import SystemSampler

from .control import Controls
from .events import (ClipEvent, Coalescer, RecordingProblem, RunFailed,
                     AveragedVal, RunFinished, RunStarted, StepMetrics, SystemSample, TheorySample,
                     TraceCaptured,
                     ValMetrics)
from .faults import FaultPolicy
from .models import build_model, num_params
from .optim import build_optimizer, evaluating, lr_factor
from .precision import Precision
from .profiling import NULL_PROBE, Profiler
from .recovery import Snapshot, is_out_of_memory
from .averaging import WeightAverage
from .noise import NoiseWatch
from .sharpness import SharpnessWatch
from .svrg import SVRG
from .theory import TheoryWatch


def resolve_device(name: str) -> torch.device:
    """auto picks CUDA, then MPS, then CPU; an explicit device must exist here."""
    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps and mps.is_available())
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu")
    dev = torch.device(name)
    ok = {"cpu": True, "mps": has_mps,
          "cuda": torch.cuda.is_available() and (dev.index or 0) < torch.cuda.device_count()}
    if not ok[dev.type]:
        here = ["auto", "cpu"] + (["cuda"] if torch.cuda.is_available() else []) + (["mps"] if has_mps else [])
        raise ConfigError(f"--device {name!r} is not available on this machine; allowed here: "
                          f"{', '.join(here)}")
    return dev


def make_deterministic() -> None:
    """Same seed, same losses on CUDA too: deterministic kernels only (cuDNN's convolution
    autotuner off, a fixed cuBLAS workspace). An op with no deterministic kernel warns once
    instead of failing the run. Process-wide, so it is for a trainer's own process."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")   # read when cuBLAS starts
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False


class Trainer(Controls, FaultPolicy):
    """Trains one run. ``submit`` is thread-safe; ``run`` blocks until the run ends."""

    def __init__(self, cfg: RunConfig, sink=None, store=None, final_loss_window: int = 10,
                 event_rate: float = 20.0, dp=None, late_readback: bool | None = None):
        self.cfg = cfg
        if cfg.deterministic:
            make_deterministic()
        self.device = resolve_device(cfg.device)
        self.store = store
        self.events = Coalescer(sink or (lambda batch: None), max_rate=event_rate)
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        torch.manual_seed(cfg.seed)
        self.task = build_task(cfg, self.device)
        self.model = build_model(cfg, self.task.model_fields).to(self.device, self.task.dtype)
        self.model.train()
        # --model linear: ||w - w*|| every step, theory's predictions beside it
        self.theory = TheoryWatch(self.task, self.model) if cfg.model == "linear" else None
        self.dp = dp or Alone()             # one process, or one rank of N (distributed.py)
        self.dp.attach(self._commands)
        self.precision = Precision(cfg.precision, self.device)
        self._wrap()
        self._index_params()
        self.optimizer_name, self.norm = cfg.optimizer, cfg.norm
        self.base_lr, self.clip, self.weight_decay = cfg.lr, cfg.clip, cfg.weight_decay
        self.hparams = {k: getattr(cfg, k) for k in specs.OPTIMIZERS[cfg.optimizer].hparams}
        self.optimizer = build_optimizer(cfg.optimizer, self.model, cfg.lr, cfg.weight_decay,
                                         self.hparams)
        # batches are drawn where they are used: on a GPU, nothing is copied from the host
        self.gen_device = self.device if self.device.type == "cuda" else torch.device("cpu")
        self.gen = torch.Generator(self.gen_device).manual_seed(data_seed(cfg.seed, self.dp.rank))
        self.guard = Guard(self.device)
        self.average = WeightAverage(self.model, cfg.average) if cfg.average else None
        self.sharpness = SharpnessWatch(self, cfg.sharpness_every) if cfg.sharpness_every else None
        self.noise = NoiseWatch(self, cfg.noise_scale_every) if cfg.noise_scale_every else None
        self._make_svrg()
        # on one GPU the values of a step are read while the next one runs (guard.py)
        self.readback = ReadBack(self.device, self.device.type == "cuda" and self.dp.size == 1
                                 if late_readback is None else late_readback)
        self._diverged = False              # a step read back late stopped the run
        self.step = 0                       # the next step to train; also steps completed
        self.paused = False
        self.status = "running"
        self.error: str | None = None       # what failed the run, in one line
        self.initial_loss: float | None = None
        self.recent_losses: deque = deque(maxlen=final_loss_window)
        self.last_val_loss: float | None = None
        self.last_val_loss_averaged: float | None = None
        self.last_grad_norm: float | None = None
        self.clip_count = 0
        self.skipped_steps = 0
        self.train_seconds = 0.0
        self.profiler = Profiler(lambda: self.model, self.device, cfg.profile, cfg.sample_every,
                                 self.precision.mode)
        self._trace = None                  # a TraceCapture while one is being captured
        self._single_step = False
        self._stop = False
        self._bad_in_row = 0                # skipped steps in a row (non-finite loss or grads)
        self.blow_up = BlowUpWatch(cfg.diverge_factor, cfg.diverge_steps)
        self.snapshot = Snapshot(self)      # the last good state, for a rewind
        if store is not None:               # disk full, I/O errors: the user is told
            store.on_problem = lambda message, dropped: self._emit(
                RecordingProblem(self.step, message, dropped))
            store.watch_commands(self.submit)   # a dashboard that follows the run (open)

    def _wrap(self) -> None:
        """What trains: the model, or DDP around it; and that compiled, with --compile."""
        self.net = self.dp.wrap(self.model)
        mode = self.cfg.compile
        self.fast = self.net if mode == "off" else torch.compile(
            self.net, mode=None if mode == "default" else mode)

    def _make_svrg(self) -> None:
        """SVRG's snapshot and full gradient, while svrg is the optimizer (svrg.py)."""
        self.svrg = (SVRG(self.model, self.task, self.cfg.batch_size, self.hparams["svrg_every"],
                          self.cfg.seed) if self.optimizer_name == "svrg" else None)

    def _index_params(self) -> None:
        named = list(self.model.named_parameters())
        self.param_names = [n for n, _ in named]
        self.params = [p for _, p in named]

    def _emit_sample(self, event) -> None:
        self.events.emit(event)
        if self.store is not None:
            self.store.record_sample(event)

    def _emit(self, event) -> None:
        self.events.emit(event)
        if self.store is not None and not isinstance(event, (StepMetrics, ValMetrics)):
            self.store.record_event(event)

    # -- the loop ---------------------------------------------------------------

    def run(self) -> dict:
        """Train until the step budget, a stop, divergence or an error; return the summary."""
        cfg = self.cfg
        self._emit(RunStarted(0, self.store.run_id if self.store else "", str(self.store.run_dir)
                              if self.store else "", cfg.to_dict(), num_params(self.model),
                              str(self.device), self.precision.mode))
        if self.theory is not None:
            self._emit_sample(self.theory.predict(self))
        sampler = SystemSampler(self._on_system_sample).start() if cfg.profile else None
        try:
            while True:
                if self.step >= cfg.steps:
                    if not self.settle(0):                 # the last step's values
                        self.status = "diverged"
                        break
                    if self.step >= cfg.steps:              # (or it went back to a bad step)
                        self.status = "finished"
                        if self.step % cfg.val_every and self.dp.recorder:
                            self._validate()
                        break
                self._drain_commands()
                if self._diverged:
                    self.status = "diverged"
                    break
                if self._stop:
                    self.status = "interrupted"
                    break
                if self.paused and not self._single_step:
                    continue                               # a pause just arrived: wait
                try:
                    if not self.advance():
                        self.status = "diverged"
                        break
                except Exception as e:  # out of memory pauses; anything else fails the run
                    if not is_out_of_memory(e) or self.dp.size > 1:   # one rank cannot pause
                        raise
                    self._out_of_memory(e)
        except KeyboardInterrupt:
            self.status = "interrupted"
            self.settle(0)                     # what was trained is recorded
        except Exception as e:  # a fault becomes an event; what was recorded stays
            self.status, self.error = "failed", f"{type(e).__name__}: {e}"
            self._emit(RunFailed(self.step, f"{type(e).__name__}: {e}", traceback.format_exc()))
        if self.status != "failed":             # every rank got here at the same step
            self.dp.finish(self)
        if sampler is not None:
            sampler.stop()
        if self._trace is not None:
            self._trace.abandon()
        summary = self.summary()
        self._emit(RunFinished(self.step, self.status, summary))
        if self.store is not None:
            self.store.set_status(self.status, summary)
        self.events.flush()
        return summary

    def advance(self) -> bool:
        """One step of the run loop: train, settle the steps whose values are back, validate
        when due, pass events on.

        False if the run must stop (a non-finite or exploding loss). ``run`` calls it between
        commands; benchmarks call it to time exactly what a run does per step.
        """
        before = self.step
        self._train_step()
        ok = self.settle()
        self._single_step = False
        if ok and self.step != before and self.step % self.cfg.val_every == 0 and self.dp.recorder:
            self._validate()
        due = lambda watch: ok and watch and self.step != before and self.step % watch.every == 0  # noqa: E731
        if due(self.sharpness):
            sample = self.sharpness.measure(self)           # sampled: a few dozen HVPs
            if sample is not None:
                self._emit_sample(sample)
        if due(self.noise):                                 # sampled: one extra fwd + bwd
            self._emit_sample(self.noise.measure(self))
        self.events.poll()
        return ok

    def _train_step(self) -> None:
        """Queue one optimizer step. On CUDA nothing here waits for the GPU (guard.py):
        the update guards itself on the device and the values are read a step late."""
        t0 = time.perf_counter()
        lr = self.base_lr * lr_factor(self.cfg.schedule, self.step, self.cfg.steps,
                                      self.cfg.warmup_steps, self.cfg.decay_every)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        probe = self.profiler.probe(self.step, self.norm)   # a no-op on most steps
        half = self.cfg.sample_every // 2           # ranks are timed between profiler samples
        self.dp.begin(self.step, self.step % self.cfg.sample_every == half)
        x, y = self.task.batch("train", self.cfg.batch_size, self.gen)
        probe.mark("data")
        net = self.net if probe.eager else self.fast        # hooks need the eager module
        with probe.counting(x):                             # FLOPs, once per model shape
            with probe.saving(), self.precision.autocast():  # saved activations, sampled
                loss = self.task.loss(net(x), y)
            probe.end_forward()
            probe.mark("forward")
            self.dp.before_backward()                       # an injected straggler delay
            self.precision.backward(loss)                   # DDP averages gradients here
        probe.mark("backward")
        self.precision.unscale(self.optimizer)              # fp16: gradients at true scale
        if self.svrg is not None:                           # the variance-reduced gradient
            self.svrg.correct(self.model, self.step, x, y, self.precision.autocast)
        per_param, norm = grad_norms(self.params)           # global L2 norm, pre-clip
        probe.after_backward(per_param)
        grads = [p.grad for p in self.params if p.grad is not None]
        extra = [self.theory.distance()] if self.theory is not None else []
        if extra and self.average is not None:              # the average before this update
            extra.append(self.theory.distance(self.average.model))
        if self.readback.late:
            values = torch.stack([v.double() for v in (loss.detach(), norm, *extra)])
        else:   # read now (free on CPU); with N ranks the loss is their mean, every rank alike
            loss_v, norm_v = self.dp.read_back(loss, norm)
            values = torch.tensor([loss_v, norm_v, *(float(e) for e in extra)])
            if not math.isfinite(loss_v):                   # finite gradients or not: skip
                self.guard.found_inf.fill_(1.0)
        self.guard.clip_and_check(grads, norm, self.clip)   # no branch; flags NaN/Inf grads
        probe.before_update(self.params)
        self.guard.step(self.optimizer)                     # skipped on the device if flagged
        self.precision.update()
        if self.average is not None:                        # fold the new weights in
            self.average.update(self.model)
        self.optimizer.zero_grad(set_to_none=True)
        probe.mark("optimizer")
        probe.finish(self)
        dt = time.perf_counter() - t0
        self.train_seconds += dt
        self.profiler.observe_step_time(dt, probed=probe is not NULL_PROBE)
        self.readback.push(self.step, lr, dt, values, per_param)
        self._advance_trace()
        self.step += 1
        self.dp.end_step(self)                              # sampled: every rank's timings
        if self.step % self.cfg.snapshot_every == 0 and not self.blow_up.rising:
            self.snapshot = Snapshot(self)          # never a state already on its way up

    def settle(self, keep: int | None = None) -> bool:
        """Record the queued steps whose values are back; False if one of them stops the run.

        ``settle(0)`` waits for and records every step still in flight."""
        for entry in self.readback.ready(keep):
            loss, norm, *extra = entry.host.tolist()
            if not (math.isfinite(loss) and math.isfinite(norm)):
                return self._refused(entry, loss, norm)
            clipped = self.clip is not None and norm > self.clip
            scale = self.clip / (norm + 1e-6) if clipped else 1.0  # clip_grads_with_norm_'s factor
            if clipped:
                self.clip_count += 1
                self.events.emit(ClipEvent(entry.step, norm, self.clip, scale))
                if self.store is not None:
                    self.store.record_clip(entry.step, norm, self.clip, scale)
            self._record(entry.step, loss, entry.lr, norm, norm * scale, clipped,
                         self.cfg.batch_size / entry.seconds)
            self._bad_in_row = 0
            if extra:                                       # --model linear: ||w - w*||
                self.theory.observe(entry.step, *extra)
                self._emit_sample(TheorySample(entry.step, *extra))
            blown_up = self.blow_up.observe(entry.step, loss, entry.lr)
            if blown_up:
                return self._blown_up(entry.step, loss, blown_up)
        return True

    def _advance_trace(self) -> None:
        if self._trace is not None:
            path = self._trace.step()
            if path is not None:
                self._emit(TraceCaptured(self.step, str(path), self._trace.steps))
                self._trace = None

    def _on_system_sample(self, sample: dict) -> None:  # on the sampler's thread
        self._emit_sample(SystemSample(self.step, sample))

    def _record(self, step: int, loss: float, lr: float, grad_norm: float,
                grad_norm_clipped: float, clipped: bool, eps: float) -> None:
        if self.initial_loss is None:
            self.initial_loss = loss
        if math.isfinite(loss):
            self.recent_losses.append(loss)
        if math.isfinite(grad_norm):
            self.last_grad_norm = grad_norm
        now = time.time()
        if self.store is not None:
            self.store.record_step(step, now, loss, lr, grad_norm, grad_norm_clipped, clipped, eps)
        self.events.emit(StepMetrics(step, loss, lr, grad_norm, clipped, eps, now))

    @torch.no_grad()
    def _val_loss(self, model: torch.nn.Module) -> float:
        """Mean loss of `model` on the validation batches (the same batches every time)."""
        model.eval()  # back to train() below; not per step: it walks every module
        gen = torch.Generator(self.gen_device).manual_seed(self.cfg.seed + 1)
        with self.precision.autocast():
            losses = [self.task.loss(model(x), y)
                      for x, y in (self.task.batch("val", self.cfg.batch_size, gen)
                                   for _ in range(self.cfg.val_batches))]
        model.train()
        return torch.stack(losses).mean().item()

    def _validate(self) -> None:
        step = self.step - 1
        with evaluating(self.optimizer):        # schedule-free: at its average x, not at y
            self.last_val_loss = self._val_loss(self.model)
        if self.average is not None:                        # the averaged weights, alike
            self.last_val_loss_averaged = self._val_loss(self.average.model)
            self._emit_sample(AveragedVal(step, self.last_val_loss_averaged))
        if self.store is not None:
            self.store.record_val(step, time.time(), self.last_val_loss)
        self.events.emit(ValMetrics(step, self.last_val_loss))

    def summary(self) -> dict:
        recent = list(self.recent_losses)
        return {
            "run_id": self.store.run_id if self.store else None,
            "run_dir": str(self.store.run_dir) if self.store else None,
            "status": self.status,
            "steps": self.step,
            "params": num_params(self.model),
            "device": str(self.device),
            "precision": self.precision.mode,
            "compile": self.cfg.compile,
            "model": self.cfg.model,
            "optimizer": self.optimizer_name,
            "norm": self.norm,
            "lr": self.base_lr,
            "clip": self.clip,
            "initial_train_loss": self.initial_loss,
            "final_train_loss": sum(recent) / len(recent) if recent else None,
            "final_val_loss": self.last_val_loss,
            **({"average": self.cfg.average, "final_val_loss_averaged":
                self.last_val_loss_averaged} if self.average else {}),
            "last_grad_norm": self.last_grad_norm,
            "clip_events": self.clip_count,
            "skipped_steps": self.skipped_steps,
            "steps_per_second": self.step / self.train_seconds if self.train_seconds else None,
            **self.profiler.summary(),
            **self.dp.summary(),
            **({"theory": self.theory.summary(self.clip_count)} if self.theory else {}),
            **({"sharpness": self.sharpness.last and self.sharpness.last.sharpness,
                "sharpness_threshold": self.sharpness.last and self.sharpness.last.threshold}
               if self.sharpness else {}),
            **(self.noise.summary() if self.noise else {}),
        }
