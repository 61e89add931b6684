"""What a fault does to a run: a non-finite step, a loss blown up, out of memory.

A mixin of ``Trainer`` (loop.py); the policies follow ``--on-diverge`` and
``--skip-limit``. Getting the weights back (``Snapshot``) is in recovery.py.
"""

from __future__ import annotations

import math

from lsml_tui.profilers.gradients import first_nonfinite
from lsml_tui.trainer.events import Diverged, NonFiniteGradients, OutOfMemory
from lsml_tui.trainer.recovery import oom_hint, release_memory


class FaultPolicy:
    """What ``Trainer`` does when a step goes wrong."""

    def _refused(self, entry, loss: float, norm: float) -> bool:
        """A step's loss or gradient was NaN or Inf: its update, and those of any step queued
        after it, were skipped on the device. Go back to it and stop, pause or skip it."""
        self.readback.discard()
        self.guard.clear()
        self.step = entry.step
        if self.precision.scaler is not None and math.isfinite(loss):   # fp16's routine overflow
            self.skipped_steps += 1
            self.emit(NonFiniteGradients(self.step, "(fp16 overflow)", loss,
                                          f"fp16 gradients overflowed at step {self.step}; update "
                                          f"skipped, loss scale now {self.precision.loss_scale():g}"))
            self.record_step(self.step, loss, entry.lr, float("nan"), float("nan"), False, 0.0)
            self.step += 1
            return True
        if not math.isfinite(loss):
            return self._nonfinite_loss(loss, entry.lr)
        # (steps in flight are settled before any command, so the parameters are still these)
        name = first_nonfinite(self.param_names, entry.per_param.tolist()) or "?"
        return self._skip(loss, entry.lr, name, f"non-finite gradient in {name} at step "
                          f"{self.step}; update skipped")

    def _blown_up(self, step: int, loss: float, what: str) -> bool:
        """The loss stayed finite but exploded (--diverge-factor): stop, or pause with a hint."""
        if self.cfg.on_diverge == "pause":
            self.paused = True
            self.emit(Diverged(step, loss, f"{what}; paused: lower the lr (l) or rewind to "
                                f"step {self.snapshot.step} (w), then resume (space)", "pause"))
            return True
        self.emit(Diverged(step, loss, f"{what}; try a lower --lr, or --diverge-factor off to "
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
            self.emit(Diverged(self.step, loss, f"{what}; paused: lower the lr (l) or rewind to "
                                f"step {self.snapshot.step} (w), then resume (space)", "pause"))
            return True
        self.emit(Diverged(self.step, loss, f"{what}; try a lower --lr or --clip, or "
                            f"--on-diverge pause", "stop"))
        return False

    def _skip(self, loss: float, lr: float, culprit: str, message: str) -> bool:
        """Skip this update (name the culprit); stop after --skip-limit skips in a row."""
        self.optimizer.zero_grad(set_to_none=True)
        self.skipped_steps += 1
        self._bad_in_row += 1
        self.emit(NonFiniteGradients(self.step, culprit, loss, message))
        self.record_step(self.step, loss, lr, float("nan"), float("nan"), False, 0.0)
        self.step += 1
        if self._bad_in_row >= self.cfg.skip_limit:
            self.emit(Diverged(self.step - 1, loss, f"{self._bad_in_row} steps in a row skipped "
                                f"for non-finite values (--skip-limit {self.cfg.skip_limit}); "
                                f"stopping", "stop"))
            return False
        return True

    def _out_of_memory(self, error: BaseException) -> None:
        """A step ran out of memory: free what it held, say so with a hint, and pause."""
        release_memory(self)
        self.paused, self._single_step = True, False
        first_line = str(error).strip().splitlines()[0][:160] if str(error).strip() else ""
        self.emit(OutOfMemory(self.step, f"out of memory at step {self.step} ({first_line}); "
                               f"paused; {oom_hint(self.cfg)}"))
