"""Commands a watched loop takes, applied in the optimizer's step hooks.

What applies to the user's own code: pause, resume and single step (the loop waits in
the step hook, before the update), the learning rate (a factor on every group, on top
of the user's own scheduler, for the update only), a trace of the next steps, and stop
(``run.should_stop``). What cannot (switching the optimizer or the normalization,
a rewind, a clip threshold, a new model) is refused with the reason.
"""

from __future__ import annotations

import queue

from lsml_tui.trainer import commands as C
from lsml_tui.trainer.config import ConfigError
from lsml_tui.trainer.control import RunControls
from lsml_tui.trainer.validate import check_lr

IDLE_POLL = 0.5         # seconds between looks at the commands while paused
REFUSED = {             # what a watched loop cannot do, and why
    C.SetOptimizer: "your script builds its optimizer; switch it there",
    C.SetNorm: "your script builds its model; change the normalization there",
    C.SetClip: "your script does its own clipping; change the threshold there",
    C.Rewind: "a watched run keeps no snapshot of your model to rewind to",
}


class WatchControls(RunControls):
    """What a watched run does with a command (see the module's docstring)."""

    def submit(self, cmd: C.Command) -> None:
        """Queue a command; it is applied at the next optimizer step (thread-safe)."""
        self._commands.put(cmd)

    def drain_commands(self) -> None:
        """Apply what is queued; while paused, wait here (the step hook) for more."""
        while True:
            waiting = self.paused and not self._single_step and not self.should_stop
            if not waiting and self._commands.empty():  # the usual step: nothing queued
                return
            if waiting:
                self.events.flush()                 # the dashboard sees 'paused' first
            try:
                cmd = self._commands.get(timeout=IDLE_POLL) if waiting else \
                    self._commands.get_nowait()
            except queue.Empty:
                if waiting:
                    continue
                return
            self._apply(cmd)

    def _change(self, cmd: C.Command) -> tuple[str, dict]:
        if type(cmd) in REFUSED:
            raise ConfigError(f"not for a watched run: {REFUSED[type(cmd)]}")
        common = self.run_control(cmd)          # pause, resume, single step, trace
        if common is not None:
            return common
        match cmd:
            case C.SetLR(lr=lr):
                check_lr(lr)
                base = self.optimizer.param_groups[0]["lr"]     # the user's own, this step
                factor = float(lr) / base
                when = self.ask_lr_factor(factor)
                return (f"lr {base * self.lr_factor:g} -> {lr:g}: every group's lr "
                        f"x{factor:.3g} on top of your schedule, {when}",
                        {"lr": float(lr), "lr_factor": factor})
            case C.Stop():
                return self.ask_stop(), {}
        raise ConfigError(f"unknown command {cmd!r}")
