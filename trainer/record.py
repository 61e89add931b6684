"""What becomes of a step's values: read back, they are recorded (the store's rows, the
events the dashboard draws, clip events), validated when due, and summed up at the end.

``Recorder`` is what every run records with, the built-in trainer's and a watched
script's (``lsml_tui.watch``): events out through the coalescer, rows into the run store,
clip events, the system sampler's samples. ``Recording`` adds the built-in trainer's
own part (read-back with its fault policies, validation, the summary); it is a part of
``Trainer`` (loop.py), as ``Controls`` and ``FaultPolicy`` are.
"""

from __future__ import annotations

import math
import time

import torch

from lsml_tui.trainer.commands import Stop
from lsml_tui.trainer.events import (AveragedVal, ClipEvent, Notice, Overfitting, RunFinished,
                                     StepMetrics, SystemSample, TheorySample, ValMetrics)
from lsml_tui.trainer.optim.optimizers import evaluating


class Recorder:
    """Records a run. Needs ``events`` (a Coalescer), ``store`` (a RunStore or None),
    ``step``, ``status``, ``initial_loss``, ``recent_losses`` (a bounded deque),
    ``overfit`` (an OverfitWatch), ``last_grad_norm``, ``clip_count``, ``_trace`` (a
    TraceCapture or None) and ``summary()``."""

    def emit(self, event) -> None:
        self.events.emit(event)
        if self.store is not None and not isinstance(event, (StepMetrics, ValMetrics)):
            self.store.record_event(event)

    def emit_sample(self, event) -> None:
        self.events.emit(event)
        if self.store is not None:
            self.store.record_sample(event)

    def on_system_sample(self, sample: dict) -> None:  # on the sampler's thread
        self.emit_sample(SystemSample(self.step, sample))

    def record_end(self, sampler) -> dict:
        """The run has ended with ``status``: stop the system `sampler` (or None) and a trace
        in progress, record the summary and the status and wait for the store to commit
        them, then send what is buffered; return the summary."""
        if sampler is not None:
            sampler.stop()
        if self._trace is not None:
            self._trace.abandon()
        summary = self.summary()
        finished = RunFinished(self.step, self.status, summary)
        if self.store is not None:      # on disk before anyone hears that the run ended: a
            self.store.record_event(finished)   # dashboard reads the store when told
            self.store.set_status(self.status, summary)
            self.store.sync()
        self.events.emit(finished)
        self.events.flush()
        return summary

    def record_clip(self, step: int, norm: float, threshold: float) -> float:
        """A clip event at `step`; returns the factor the gradients were scaled by
        (``clip_grad_norm_``'s threshold / (norm + 1e-6))."""
        scale = threshold / (norm + 1e-6)
        self.clip_count += 1
        self.events.emit(ClipEvent(step, norm, threshold, scale))
        if self.store is not None:
            self.store.record_clip(step, norm, threshold, scale)
        return scale

    def recent_train_loss(self) -> float | None:
        """The mean of the recent steps' losses (the final training loss at the end)."""
        return sum(self.recent_losses) / len(self.recent_losses) if self.recent_losses else None

    def record_validation(self, step: int, val_loss: float) -> None:
        """A validation loss: the store's row, the loss panel's point, the overfitting alarm
        (``overfit``, an OverfitWatch)."""
        if self.store is not None:
            self.store.record_val(step, time.time(), val_loss)
        self.events.emit(ValMetrics(step, val_loss))
        self.last_val_loss = val_loss
        alarm = self.overfit.observe(step, val_loss, self.recent_train_loss())
        if alarm:
            self.emit(Overfitting(**alarm))

    def record_step(self, step: int, loss: float, lr: float, grad_norm: float,
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


class Recording(Recorder):
    """The trainer's read-back, validation and summary."""

    def settle(self, keep: int | None = None) -> bool:
        """Record the queued steps whose values are back; False if one of them stops the run.

        ``settle(0)`` waits for and records every step still in flight."""
        for entry in self.readback.ready(keep):
            loss, norm, *extra = entry.host if isinstance(entry.host, list) else entry.host.tolist()
            if not (math.isfinite(loss) and math.isfinite(norm)):
                return self._refused(entry, loss, norm)
            clipped = self.clip is not None and norm > self.clip
            scale = self.record_clip(entry.step, norm, self.clip) if clipped else 1.0
            self.record_step(entry.step, loss, entry.lr, norm, norm * scale, clipped,
                             self.cfg.batch_size / entry.seconds)
            self._bad_in_row = 0
            if extra:                                       # --model linear: ||w - w*||
                self.theory.observe(entry.step, *extra)
                self.emit_sample(TheorySample(entry.step, *extra))
            blown_up = self.blow_up.observe(entry.step, loss, entry.lr)
            if blown_up:
                return self._blown_up(entry.step, loss, blown_up)
        return True

    @torch.no_grad()
    def val_loss(self, model: torch.nn.Module) -> float:
        """Mean loss of `model` on the validation batches (the same batches every time)."""
        model.eval()  # back to train() below; not per step: it walks every module
        if self.dp.pipelined and model is self.model:     # through every stage
            loss = self.dp.val_loss(self)
            model.train()
            return loss
        gen = torch.Generator(self.gen_device).manual_seed(self.cfg.seed + 1)
        with self.precision.autocast():
            losses = [self.task.loss(model(x), y)
                      for x, y in (self.task.batch("val", self.cfg.batch_size, gen)
                                   for _ in range(self.cfg.val_batches))]
        model.train()
        return torch.stack(losses).mean().item()

    def validate(self) -> None:
        step = self.step - 1
        with evaluating(self.optimizer):        # schedule-free: at its average x, not at y
            self.last_val_loss = self.val_loss(self.model)
        if self.average is not None:                        # the averaged weights, alike
            self.last_val_loss_averaged = self.val_loss(self.average.model)
            self.emit_sample(AveragedVal(step, self.last_val_loss_averaged))
        self.record_validation(step, self.last_val_loss)
        self.final_gap_val = self.last_val_loss     # the gap is the trained state's, not a restore's
        if self.best.observe(step, self.last_val_loss, self.model) and not self.stopped_early:
            self.stopped_early = True               # every rank stops at one step: a command
            self.emit(Notice(step, f"early stopping: no better validation loss for "
                                   f"{self.best.patience} validations (best "
                                   f"{self.best.best_loss:.4g} at step {self.best.best_step})"))
            self.submit(Stop())

    def restore_best(self) -> None:
        """--restore-best: end with the best validation's weights, validated again on the
        same batches (so the final validation loss is the best one)."""
        if not self.best.restore(self.model):
            return
        self.restored_best = True
        with evaluating(self.optimizer):
            self.last_val_loss = self.val_loss(self.model)
        self.emit(Notice(self.step, f"restored the weights of step {self.best.best_step}, "
                                    f"the best validation loss ({self.last_val_loss:.4g})"))

    def summary(self) -> dict:
        final_train = self.recent_train_loss()
        return {
            "run_id": self.store.run_id if self.store else None,
            "run_dir": str(self.store.run_dir) if self.store else None,
            "status": self.status,
            "steps": self.step,
            "params": self.num_params,
            "device": str(self.device),
            "precision": self.precision.mode,
            "compile": self.cfg.compile,
            "model": self.cfg.model,
            "optimizer": self.optimizer_name,
            "norm": self.norm,
            "lr": self.base_lr,
            "clip": self.clip,
            "weight_decay": self.weight_decay,
            **({"dropout": self.dropout} if self.dropout is not None else {}),
            "initial_train_loss": self.initial_loss,
            "final_train_loss": final_train,
            "final_val_loss": self.last_val_loss,
            **self.best.summary(final_train, getattr(self, "final_gap_val", None)),
            "overfitting_step": self.overfit.fired_at,
            **({"early_stop": self.cfg.early_stop, "stopped_early": self.stopped_early}
               if self.cfg.early_stop is not None else {}),
            **({"restored_best": self.restored_best} if self.cfg.restore_best else {}),
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
