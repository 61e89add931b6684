"""The UI side of the trainer process: start it, send commands, receive event batches.

No torch here: the trainer runs in a process of its own (forked from a forkserver that
imported torch), so a crash, a segfault or an out-of-memory kill there never takes the
UI down.
"""

from __future__ import annotations

import os
import queue
import time
from multiprocessing import resource_tracker

from lsml_tui.trainer import commands as C
from lsml_tui.trainer import forkserver
from lsml_tui.trainer.config import RunConfig, to_toml
from lsml_tui.trainer.events import StepMetrics
from lsml_tui.trainer.worker import TRAINER_MODULES, worker_main


def prepare_processes(trainer: bool = True) -> None:
    """Start multiprocessing's resource tracker now, before Textual takes over stdio
    (started later, it is handed Textual's stderr stand-in, which has no file descriptor),
    and, for a dashboard that will start a trainer, the forkserver it forks from, whose
    imports then run while the dashboard starts."""
    resource_tracker.ensure_running()
    if trainer:
        trainer_context()


def trainer_context():
    """The multiprocessing context trainer processes start in: forked from a forkserver
    that has imported torch (trainer/forkserver.py), so a start or a restart takes
    milliseconds instead of seconds of imports."""
    return forkserver.start(TRAINER_MODULES, quiet=True)


def thin(events: list, budget: int) -> tuple[list, int]:
    """At most about `budget` events for the panels: every event that is not a step metric,
    and evenly spaced step metrics (always the last). Returns (kept, step metrics dropped).

    A flood (a very fast trainer, a fake producer) then costs the UI a bounded amount of
    work per redraw; the run store, written by the trainer, still has every step.
    """
    if len(events) <= budget:
        return events, 0
    steps = [i for i, e in enumerate(events) if isinstance(e, StepMetrics)]
    room = max(1, budget - (len(events) - len(steps)))
    if len(steps) <= room:
        return events, 0
    stride = len(steps) / room
    keep = {steps[int(k * stride)] for k in range(room)} | {steps[-1]}
    kept = [e for i, e in enumerate(events) if i in keep or not isinstance(e, StepMetrics)]
    return kept, len(events) - len(kept)


class TrainerBridge:
    """One trainer process for one run."""

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        ctx = trainer_context()
        self._commands = ctx.Queue()
        self._events = ctx.Queue()
        # With --workers N the trainer process is the launcher of N ranks, and a daemonic
        # process may not have children; stop() and its parent watchdog end it instead.
        self.process = ctx.Process(target=worker_main, name="lsml-tui-trainer",
                                   daemon=cfg.workers == 1,
                                   args=(cfg.to_dict(), to_toml(cfg), self._commands,
                                         self._events, os.getcwd()))
        self.ended = False      # the trainer said it is done (None on the queue)
        self._stopped = False

    def start(self) -> "TrainerBridge":
        self.process.start()
        return self

    def send(self, cmd: C.Command) -> None:
        if self.process.is_alive():
            self._commands.put(cmd)

    def drain(self, limit: int = 10_000) -> list:
        """Every event that has arrived, flattened from its batches, without blocking."""
        out: list = []
        for _ in range(limit):
            try:
                batch = self._events.get_nowait()
            except (queue.Empty, OSError, ValueError):
                break
            if batch is None:
                self.ended = True
                break
            out.extend(batch)
        return out

    @property
    def crashed(self) -> bool:
        """The process died without saying it was done (segfault, OOM kill, SIGKILL)."""
        return not self.ended and self.process.exitcode not in (None, 0)

    def stop(self, timeout: float = 10.0) -> list:
        """Ask the trainer to stop and wait (kill it if it does not go); return its last events."""
        last: list = []
        if self._stopped:
            return last
        self._stopped = True
        if self.process.is_alive():
            self._commands.put(C.Stop())
            self._commands.put(None)
            deadline = time.monotonic() + timeout
            while not self.ended and self.process.is_alive() and time.monotonic() < deadline:
                last += self.drain()        # keep the pipe flowing so the child can exit
                time.sleep(0.02)
            self.process.join(max(0.0, deadline - time.monotonic()))
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        last += self.drain()
        for q in (self._commands, self._events):
            q.cancel_join_thread()
            q.close()
        return last


class _NoProcess:
    """Where a bridge has no trainer process behind it."""

    pid, exitcode = None, None

    def is_alive(self) -> bool:
        return False


class ReplayBridge:
    """Feeds the dashboard recorded or scripted events; there is no trainer to command.

    ``more()`` is the hook for subclasses that produce events as they are drained.
    """

    def __init__(self, cfg: RunConfig, events=()):
        self.cfg, self.process = cfg, _NoProcess()
        self._pending = list(events)
        self.ended = self.crashed = False

    def start(self) -> "ReplayBridge":
        return self

    def more(self) -> list:
        return []

    def drain(self) -> list:
        out, self._pending = self._pending, []
        return out + self.more()

    def send(self, cmd: C.Command) -> None:
        pass

    def stop(self, timeout: float = 0.0) -> list:
        return []
