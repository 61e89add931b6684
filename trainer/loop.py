"""The training loop: commands applied between steps, events out, every step recorded."""

from __future__ import annotations

import math
import os
import queue
import time
import traceback
from collections import deque

import torch

from . import commands as C
from . import specs
from .config import ConfigError, RunConfig, check_clip, check_lr, suggest
from .data import build_task
from .distributed import Alone, data_seed
from .divergence import BlowUpWatch
from lsml_tui.profilers.gradients import first_nonfinite
from lsml_tui.profilers.system import SystemSampler
from lsml_tui.profilers.trace import TraceCapture

from .events import (ClipEvent, CommandApplied, CommandRefused, Coalescer, Diverged,
                     NonFiniteGradients, OutOfMemory, RecordingProblem, RunFailed,
                     RunFinished, RunStarted, StepMetrics, SystemSample, TraceCaptured,
                     ValMetrics)
from .models import build_model, num_params, set_norm
from .optim import build_optimizer, lr_factor, rebuild_keeping_state, switch_optimizer
from .profiling import NULL_PROBE, Profiler
from .recovery import Snapshot, is_out_of_memory, oom_hint, release_memory


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


class Trainer:
    """Trains one run. ``submit`` is thread-safe; ``run`` blocks until the run ends."""

    def __init__(self, cfg: RunConfig, sink=None, store=None, final_loss_window: int = 10,
                 event_rate: float = 20.0, dp=None):
        self.cfg = cfg
        if cfg.deterministic:
            make_deterministic()
        self.device = resolve_device(cfg.device)
        self.store = store
        self.events = Coalescer(sink or (lambda batch: None), max_rate=event_rate)
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        torch.manual_seed(cfg.seed)
        self.task = build_task(cfg, self.device)
        self.model = build_model(cfg, self.task.model_fields).to(self.device).train()
        self.dp = dp or Alone()             # one process, or one rank of N (distributed.py)
        self.dp.attach(self._commands)
        self.net = self.dp.wrap(self.model)  # what trains: the model, or DDP around it
        self._index_params()
        self.optimizer_name, self.norm = cfg.optimizer, cfg.norm
        self.base_lr, self.clip, self.weight_decay = cfg.lr, cfg.clip, cfg.weight_decay
        self.hparams = {k: getattr(cfg, k) for k in specs.OPTIMIZERS[cfg.optimizer].hparams}
        self.optimizer = build_optimizer(cfg.optimizer, self.model, cfg.lr, cfg.weight_decay,
                                         self.hparams)
        self.gen = torch.Generator().manual_seed(data_seed(cfg.seed, self.dp.rank))
        self.step = 0                       # the next step to train; also steps completed
        self.paused = False
        self.status = "running"
        self.error: str | None = None       # what failed the run, in one line
        self.initial_loss: float | None = None
        self.recent_losses: deque = deque(maxlen=final_loss_window)
        self.last_val_loss: float | None = None
        self.last_grad_norm: float | None = None
        self.clip_count = 0
        self.skipped_steps = 0
        self.train_seconds = 0.0
        self.profiler = Profiler(lambda: self.model, self.device, cfg.profile, cfg.sample_every)
        self._trace: TraceCapture | None = None
        self._single_step = False
        self._stop = False
        self._bad_in_row = 0                # skipped steps in a row (non-finite loss or grads)
        self.blow_up = BlowUpWatch(cfg.diverge_factor, cfg.diverge_steps)
        self.snapshot = Snapshot(self)      # the last good state, for a rewind
        if store is not None:               # disk full, I/O errors: the user is told
            store.on_problem = lambda message, dropped: self._emit(
                RecordingProblem(self.step, message, dropped))
            store.watch_commands(self.submit)   # a dashboard that follows the run (open)

    # -- the control API --------------------------------------------------------

    def submit(self, cmd: C.Command) -> None:
        """Queue a command; it is applied between two steps (thread-safe)."""
        self._commands.put(cmd)

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

    def _waiting(self) -> bool:
        return self.paused and not self._single_step and not self._stop

    def _drain_commands(self) -> None:
        """Apply the commands due before this step; while paused, wait for more."""
        while True:
            for cmd in self.dp.commands(self._commands, self._waiting(), self.events.flush):
                self._apply(cmd)
            if not self._waiting():
                return

    def _apply(self, cmd: C.Command) -> None:
        name = C.describe(cmd)
        try:
            detail, changes = self._change(cmd)
        except ConfigError as e:
            self._emit(CommandRefused(self.step, name, str(e)))
            return
        self._emit(CommandApplied(self.step, name, detail, changes))

    def _change(self, cmd: C.Command) -> tuple[str, dict]:
        """Apply one command; return (detail, changes) or raise ConfigError with the reason."""
        match cmd:
            case C.SetOptimizer(name=new, lr=lr, hparams=hp):
                return self._set_optimizer(new, lr, hp)
            case C.SetNorm(kind=kind):
                refusal = specs.norm_refusal(self.cfg.model, kind)
                if refusal:
                    raise ConfigError(f"norm {kind!r} refused for the {self.cfg.model}: {refusal}")
                if kind == self.norm:
                    raise ConfigError(f"norm is already {kind}")
                old, slots = self.norm, set_norm(self.model, kind)
                self.norm = kind
                self.net = self.dp.wrap(self.model)        # DDP tracks the new parameters
                self._index_params()
                self.optimizer, kept = rebuild_keeping_state(
                    self.optimizer, self.optimizer_name, self.model, self.base_lr,
                    self.weight_decay, self.hparams)
                return (f"norm {old} -> {kind} in {slots} slots; new norms start as identity; "
                        f"optimizer state kept for {kept} unchanged tensors",
                        {"norm": kind, "previous": old})
            case C.SetLR(lr=lr):
                check_lr(lr)
                old, self.base_lr = self.base_lr, float(lr)
                return f"lr {old:g} -> {lr:g}", {"lr": float(lr), "previous": old}
            case C.SetClip(threshold=t):
                check_clip(t)
                old, self.clip = self.clip, t
                fmt = lambda v: "off" if v is None else f"{v:g}"  # noqa: E731
                return f"clip {fmt(old)} -> {fmt(t)}", {"clip": t, "previous": old}
            case C.Pause():
                if self.paused:
                    raise ConfigError("already paused")
                self.paused = True
                return f"paused before step {self.step}", {"paused": True}
            case C.Resume():
                if not self.paused:
                    raise ConfigError("not paused")
                self.paused = False
                return f"resumed at step {self.step}", {"paused": False}
            case C.SingleStep():
                if not self.paused:
                    raise ConfigError("single step applies while paused; pause first")
                self._single_step = True
                return f"single step {self.step}", {}
            case C.Rewind():
                detail = self.snapshot.restore(self)
                self.blow_up.reset()
                return detail
            case C.Stop():
                self._stop = True
                return f"stop requested before step {self.step}", {}
            case C.CaptureTrace(steps=n):
                if self.store is None:
                    raise ConfigError("a trace needs a run directory to be written to")
                if self._trace is not None:
                    raise ConfigError("a trace is already being captured")
                if not 1 <= n <= 100:
                    raise ConfigError(f"trace steps {n} is out of range: must be 1 to 100")
                path = self.store.run_dir / f"trace-step{self.step}.json"
                self._trace = TraceCapture(path, n, self.device)
                return f"tracing steps {self.step} to {self.step + n - 1} into {path.name}", {
                    "path": str(path)}
        raise ConfigError(f"unknown command {cmd!r}")

    def _set_optimizer(self, new: str, lr: float | None, hp: dict) -> tuple[str, dict]:
        if new not in specs.OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {new!r}; allowed: {', '.join(specs.OPTIMIZERS)}"
                              f"{suggest(new, specs.OPTIMIZERS)}")
        spec = specs.OPTIMIZERS[new]
        unknown = set(hp) - set(spec.hparams) - {"weight_decay"}
        if unknown:
            raise ConfigError(f"{', '.join(sorted(unknown))} does not apply to {new}")
        lr = self.base_lr if lr is None else lr
        check_lr(lr)
        hparams = {**spec.defaults, **{k: v for k, v in hp.items() if k != "weight_decay"}}
        wd = hp.get("weight_decay", spec.weight_decay)
        old = self.optimizer_name
        self.optimizer, carried = switch_optimizer(self.optimizer, old, new, self.model, lr, wd,
                                                   hparams)
        self.optimizer_name, self.base_lr, self.weight_decay, self.hparams = new, lr, wd, hparams
        state = f"carried {', '.join(carried)} from {old}" if carried else "state starts fresh"
        return (f"optimizer {old} -> {new} (lr {lr:g}); {state}",
                {"optimizer": new, "previous": old, "lr": lr, "carried": list(carried)})

    # -- the loop ---------------------------------------------------------------

    def run(self) -> dict:
        """Train until the step budget, a stop, divergence or an error; return the summary."""
        cfg = self.cfg
        self._emit(RunStarted(0, self.store.run_id if self.store else "", str(self.store.run_dir)
                              if self.store else "", cfg.to_dict(), num_params(self.model),
                              str(self.device)))
        sampler = SystemSampler(self._on_system_sample).start() if cfg.profile else None
        try:
            while self.step < cfg.steps:
                self._drain_commands()
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
            else:
                self.status = "finished"
                if self.step % cfg.val_every and self.dp.recorder:
                    self._validate()
        except KeyboardInterrupt:
            self.status = "interrupted"
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
        """One step of the run loop: train, validate when due, pass events on.

        False if the loss went non-finite. ``run`` calls it between commands;
        benchmarks call it to time exactly what a run does per step.
        """
        before = self.step
        if not self._train_step():
            return False
        self._single_step = False
        if self.step != before and self.step % self.cfg.val_every == 0 and self.dp.recorder:
            self._validate()
        self.events.poll()
        return True

    def _train_step(self) -> bool:
        """One optimizer step; False if the loss is not finite (nothing is then updated)."""
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
        with probe.counting(x):                             # FLOPs, once per model shape
            with probe.saving():                            # saved activations, sampled
                loss = self.task.loss(self.net(x), y)
            probe.end_forward()
            probe.mark("forward")
            self.dp.before_backward()                       # an injected straggler delay
            loss.backward()                                 # DDP averages gradients here
        probe.mark("backward")
        probe.after_backward(self.params)
        grads = [p.grad for p in self.params if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads)         # global L2 norm, pre-clip
        # One read-back per step (a device sync on GPU), before clipping and the
        # update, so a non-finite loss or gradient never reaches the weights and
        # clipping by a NaN norm never smears it over every gradient. With N ranks
        # the loss is their mean (one small all-reduce) and every rank decides alike.
        loss_v, norm_v = self.dp.read_back(loss, norm)
        if not math.isfinite(loss_v):
            return self._nonfinite_loss(loss_v, lr)
        if not math.isfinite(norm_v):
            name = first_nonfinite(self.param_names, self.params)
            return self._skip(loss_v, lr, name or "?", f"non-finite gradient in {name} at step "
                              f"{self.step}; update skipped")
        clipped = self.clip is not None and norm_v > self.clip
        if clipped:
            torch.nn.utils.clip_grads_with_norm_(self.params, self.clip, norm)
        probe.before_update(self.params)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        probe.mark("optimizer")
        probe.finish(self)
        dt = time.perf_counter() - t0
        self.train_seconds += dt
        self.profiler.observe_step_time(dt, probed=probe is not NULL_PROBE)
        scale = self.clip / (norm_v + 1e-6) if clipped else 1.0   # clip_grads_with_norm_'s formula
        if clipped:
            self.clip_count += 1
            self.events.emit(ClipEvent(self.step, norm_v, self.clip, scale))
            if self.store is not None:
                self.store.record_clip(self.step, norm_v, self.clip, scale)
        self._record(loss_v, lr, norm_v, norm_v * scale, clipped, self.cfg.batch_size / dt)
        self._advance_trace()
        self.step += 1
        self._bad_in_row = 0
        self.dp.end_step(self)                              # sampled: every rank's timings
        blown_up = self.blow_up.observe(self.step - 1, loss_v, lr)
        if blown_up:
            return self._blown_up(loss_v, blown_up)
        if self.step % self.cfg.snapshot_every == 0 and not self.blow_up.rising:
            self.snapshot = Snapshot(self)          # never a state already on its way up
        return True

    def _blown_up(self, loss: float, what: str) -> bool:
        """The loss stayed finite but exploded (--diverge-factor): stop, or pause with a hint."""
        step = self.step - 1                        # the step that was recorded last
        if self.cfg.on_diverge == "pause":
            self.paused = True
            self._emit(Diverged(step, loss, f"{what}; paused: lower the lr (l) or rewind to "
                                f"step {self.snapshot.step} (w), then resume (space)", "pause"))
            return True
        self._emit(Diverged(step, loss, f"{what}; try a lower --lr, or --diverge-factor off to "
                            f"let it run", "stop"))
        return False

    def _nonfinite_loss(self, loss: float, lr: float) -> bool:
        """The loss is NaN or Inf and nothing was updated: stop, pause or skip (--on-diverge).

        Stop and pause record nothing for this step, so the last recorded loss is finite.
        """
        action = self.cfg.on_diverge
        if action == "skip":
            return self._skip(loss, lr, "(loss)", f"loss became {loss} at step {self.step}; "
                              f"update skipped")
        self.optimizer.zero_grad(set_to_none=True)
        what = f"loss became {loss} at step {self.step} (lr {lr:g})"
        if action == "pause":
            self.paused = True
            self._emit(Diverged(self.step, loss, f"{what}; paused: lower the lr (l) or rewind to "
                                f"step {self.snapshot.step} (w), then resume (space)", "pause"))
            return True
        self._emit(Diverged(self.step, loss, f"{what}; try a lower --lr or --clip, or "
                            f"--on-diverge pause", "stop"))
        return False

    def _skip(self, loss: float, lr: float, culprit: str, message: str) -> bool:
        """Skip this update (name the culprit); stop after --skip-limit skips in a row."""
        self.optimizer.zero_grad(set_to_none=True)
        self.skipped_steps += 1
        self._bad_in_row += 1
        self._emit(NonFiniteGradients(self.step, culprit, loss, message))
        self._record(loss, lr, float("nan"), float("nan"), False, 0.0)
        self.step += 1
        if self._bad_in_row >= self.cfg.skip_limit:
            self._emit(Diverged(self.step - 1, loss, f"{self._bad_in_row} steps in a row skipped "
                                f"for non-finite values (--skip-limit {self.cfg.skip_limit}); "
                                f"stopping", "stop"))
            return False
        return True

    def _out_of_memory(self, error: BaseException) -> None:
        """A step ran out of memory: free what it held, say so with a hint, and pause."""
        release_memory(self)
        self.paused, self._single_step = True, False
        first_line = str(error).strip().splitlines()[0][:160] if str(error).strip() else ""
        self._emit(OutOfMemory(self.step, f"out of memory at step {self.step} ({first_line}); "
                               f"paused; {oom_hint(self.cfg)}"))

    def _advance_trace(self) -> None:
        if self._trace is not None:
            path = self._trace.step()
            if path is not None:
                self._emit(TraceCaptured(self.step, str(path), self._trace.steps))
                self._trace = None

    def _on_system_sample(self, sample: dict) -> None:  # on the sampler's thread
        self._emit_sample(SystemSample(self.step, sample))

    def _record(self, loss: float, lr: float, grad_norm: float, grad_norm_clipped: float,
                clipped: bool, eps: float) -> None:
        if self.initial_loss is None:
            self.initial_loss = loss
        if math.isfinite(loss):
            self.recent_losses.append(loss)
        if math.isfinite(grad_norm):
            self.last_grad_norm = grad_norm
        now = time.time()
        if self.store is not None:
            self.store.record_step(self.step, now, loss, lr, grad_norm, grad_norm_clipped, clipped,
                                   eps)
        self.events.emit(StepMetrics(self.step, loss, lr, grad_norm, clipped, eps, now))

    @torch.no_grad()
    def _validate(self) -> None:
        self.model.eval()  # back to train() below; not per step: it walks every module
        gen = torch.Generator().manual_seed(self.cfg.seed + 1)  # the same batches every time
        losses = [self.task.loss(self.model(x), y)
                  for x, y in (self.task.batch("val", self.cfg.batch_size, gen)
                               for _ in range(self.cfg.val_batches))]
        self.last_val_loss = torch.stack(losses).mean().item()
        self.model.train()
        step = self.step - 1
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
            "model": self.cfg.model,
            "optimizer": self.optimizer_name,
            "norm": self.norm,
            "lr": self.base_lr,
            "clip": self.clip,
            "initial_train_loss": self.initial_loss,
            "final_train_loss": sum(recent) / len(recent) if recent else None,
            "final_val_loss": self.last_val_loss,
            "last_grad_norm": self.last_grad_norm,
            "clip_events": self.clip_count,
            "skipped_steps": self.skipped_steps,
            "steps_per_second": self.step / self.train_seconds if self.train_seconds else None,
            **self.profiler.summary(),
            **self.dp.summary(),
        }
