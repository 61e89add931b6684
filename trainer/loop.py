"""The training loop: commands applied between steps, events out, every step recorded."""

from __future__ import annotations

import math
import queue
import time
import traceback
from collections import deque
from contextlib import nullcontext

import torch

from lsml_tui.profilers.system import SystemSampler
from lsml_tui.trainer import specs
from lsml_tui.trainer.config import RunConfig
from lsml_tui.trainer.control import Controls
from lsml_tui.trainer.data import build_task
from lsml_tui.trainer.device import make_deterministic, resolve_device
from lsml_tui.trainer.events import (Coalescer, RecordingProblem, RunFailed, RunStarted,
                                     TraceCaptured)
from lsml_tui.trainer.faults import FaultPolicy
from lsml_tui.trainer.guard import Guard, ReadBack
from lsml_tui.trainer.models import build_model, num_params
from lsml_tui.trainer.optim.averaging import WeightAverage
from lsml_tui.trainer.optim.optimizers import build_optimizer
from lsml_tui.trainer.optim.schedules import lr_factor
from lsml_tui.trainer.optim.svrg import SVRG
from lsml_tui.trainer.parallel.world import Alone, data_seed
from lsml_tui.trainer.precision import Precision
from lsml_tui.trainer.profiling import NULL_PROBE, Profiler
from lsml_tui.trainer.record import Recording
from lsml_tui.trainer.recovery import Snapshot, is_out_of_memory
from lsml_tui.trainer.watches.divergence import BlowUpWatch
from lsml_tui.trainer.watches.generalization import BestWatch, OverfitWatch
from lsml_tui.trainer.watches.noise import NoiseWatch
from lsml_tui.trainer.watches.sharpness import SharpnessWatch
from lsml_tui.trainer.watches.theory import TheoryWatch


class Trainer(Recording, Controls, FaultPolicy):
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
        self.dp = dp or Alone()             # one process, or one rank of N (parallel/)
        self.dp.attach(self._commands)
        self.precision = Precision(cfg.precision, self.device)
        if self.task.dtype == torch.float64 and self.precision.mode == "fp32":
            self.precision.mode = "fp64"    # --model linear: float64 weights and data
        self.num_params = num_params(self.model)    # the whole model's (pp keeps one stage)
        self._wrap()
        self._index_params()
        self.optimizer_name, self.norm = cfg.optimizer, cfg.norm
        self.base_lr, self.clip, self.weight_decay = cfg.lr, cfg.clip, cfg.weight_decay
        self.dropout = cfg.dropout                      # None: the family has no dropout
        self.hparams = {k: getattr(cfg, k) for k in specs.OPTIMIZERS[cfg.optimizer].hparams}
        self.optimizer = self.dp.shard(build_optimizer(cfg.optimizer, self.model, cfg.lr,
                                                       cfg.weight_decay, self.hparams))
        # batches are drawn where they are used: on a GPU, nothing is copied from the host
        self.gen_device = self.device if self.device.type == "cuda" else torch.device("cpu")
        self.gen = torch.Generator(self.gen_device).manual_seed(data_seed(cfg.seed, self.dp.data_rank))
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
        self.best = BestWatch(cfg.early_stop, bool(cfg.restore_best))
        self.overfit = OverfitWatch()
        self.stopped_early = False          # --early-stop ended the run: it is 'finished'
        self.restored_best = False
        self.snapshot = Snapshot(self)      # the last good state, for a rewind
        if store is not None:               # disk full, I/O errors: the user is told
            store.on_problem = lambda message, dropped: self.emit(
                RecordingProblem(self.step, message, dropped))
            store.watch_commands(self.submit)   # a dashboard that follows the run (open)

    def _wrap(self) -> None:
        """What trains: the model, or DDP around it; and that compiled, with --compile."""
        self.net = self.dp.wrap(self.model)
        mode = self.cfg.compile
        self.fast = self.net if mode == "off" else torch.compile(
            self.net, mode=None if mode == "default" else mode)

    def _make_svrg(self) -> None:
        """SVRG's snapshot and full gradient, while svrg is the optimizer (optim/svrg.py)."""
        self.svrg = (SVRG(self.model, self.task, self.cfg.batch_size, self.hparams["svrg_every"],
                          self.cfg.seed) if self.optimizer_name == "svrg" else None)

    def _index_params(self) -> None:
        named = list(self.model.named_parameters())
        self.param_names = [n for n, _ in named]
        self.params = [p for _, p in named]

    # -- the loop ---------------------------------------------------------------

    def run(self) -> dict:
        """Train until the step budget, a stop, divergence or an error; return the summary."""
        cfg = self.cfg
        self.emit(RunStarted(0, self.store.run_id if self.store else "", str(self.store.run_dir)
                              if self.store else "", cfg.to_dict(), self.num_params,
                              str(self.device), self.precision.mode))
        if self.theory is not None:
            self.emit_sample(self.theory.predict(self))
        sampler = SystemSampler(self.on_system_sample).start() if cfg.profile else None
        try:
            while True:
                if self.step >= cfg.steps:
                    if not self.settle(0):                 # the last step's values
                        self.status = "diverged"
                        break
                    if self.step >= cfg.steps:              # (or it went back to a bad step)
                        self.status = "finished"
                        if self.step % cfg.val_every and self.dp.validates:
                            self.validate()
                        break
                self.drain_commands()
                if self._diverged:
                    self.status = "diverged"
                    break
                if self._stop:
                    self.status = "finished" if self.stopped_early else "interrupted"
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
            self.emit(RunFailed(self.step, f"{type(e).__name__}: {e}", traceback.format_exc()))
        if self.status != "failed":             # every rank got here at the same step
            self.dp.finish(self)
        if self.cfg.restore_best and self.status in ("finished", "interrupted") \
                and self.dp.validates:
            self.restore_best()
        return self.record_end(sampler)

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
        if ok and self.step != before and self.step % self.cfg.val_every == 0 and self.dp.validates:
            self.validate()
        due = lambda watch: ok and watch and self.step != before and self.step % watch.every == 0  # noqa: E731
        if due(self.sharpness):
            sample = self.sharpness.measure(self)           # sampled: a few dozen HVPs
            if sample is not None:
                self.emit_sample(sample)
        if due(self.noise):                                 # sampled: one extra fwd + bwd
            self.emit_sample(self.noise.measure(self))
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
        # FLOPs, once per model shape (not through a pipeline schedule: the counter's module
        # hooks break its autograd.grad backward)
        with nullcontext() if self.dp.pipelined else probe.counting(x):
            with probe.saving(), self.precision.autocast():  # saved activations, sampled
                if self.dp.pipelined:               # --parallel pp: the schedule runs both
                    loss = self.dp.forward_backward(x, y, self.task.loss)
                else:
                    loss = self.task.loss(net(x), y)
            probe.end_forward()
            probe.mark("forward")
            if not self.dp.pipelined:
                self.dp.before_backward()                   # an injected straggler delay
                self.precision.backward(loss)               # DDP averages gradients here
        probe.mark("backward")
        self.precision.unscale(self.optimizer)              # fp16: gradients at true scale
        if self.svrg is not None:                           # the variance-reduced gradient
            self.svrg.correct(self.model, self.step, x, y, self.precision.autocast)
        per_param, norm = self.dp.grad_norms(self.params)   # global L2 norm, pre-clip
        probe.after_backward(per_param)
        grads = self.dp.local_grads(self.params)
        extra = [self.theory.distance()] if self.theory is not None else []
        if extra and self.average is not None:              # the average before this update
            extra.append(self.theory.distance(self.average.model))
        if self.readback.late:
            values = torch.stack([v.double() for v in (loss.detach(), norm, *extra)])
            self.guard.clip_and_check(grads, norm, self.clip)   # no branch; flags NaN/Inf grads
        else:   # read now (free on CPU); with N ranks the loss is their mean, every rank alike
            loss_v, norm_v = self.dp.read_back(loss, norm)
            values = [loss_v, norm_v, *(float(e) for e in extra)]
            # finite gradients or not: skip; a non-finite global norm too (one rank's shard
            # of a NaN gradient must stop every rank's update, not only its own)
            if not (math.isfinite(loss_v) and math.isfinite(norm_v)):
                self.guard.found_inf.fill_(1.0)
            if norm.dtype == torch.float32:                 # known: no tensor math needed
                self.guard.clip_read(grads, norm_v, self.clip)
            else:                                           # float64 (least squares): exact
                self.guard.clip_and_check(grads, norm, self.clip)
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

    def _advance_trace(self) -> None:
        if self._trace is not None:
            path = self._trace.step()
            if path is not None:
                self.emit(TraceCaptured(self.step, str(path), self._trace.steps))
                self._trace = None
