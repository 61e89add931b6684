"""Following a run that is still going, through its store: ``lsml-tui open`` on a headless,
torchrun or other dashboard's run, and ``lsml-tui run`` on the user's own script. New rows
reach the panels as the run commits them; commands go into the store's commands table,
which the run's recorder polls.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
from pathlib import Path

from lsml_tui.trainer import commands as C
from lsml_tui.trainer.store.inbox import send_command
from lsml_tui.trainer.store.reader import open_run
from lsml_tui.trainer.store.schema import DB_NAME, FINAL
from lsml_tui.tui.bridge import ReplayBridge
from lsml_tui.tui.replay import merge_rows

BATCH = 20_000          # rows of each table read per tick: a long run catches up in chunks


class _LiveRun:
    """Stands in for a trainer process: alive while the store says the run is going."""

    pid, exitcode = None, None

    def __init__(self):
        self.alive = True

    def is_alive(self) -> bool:
        return self.alive


class FollowBridge(ReplayBridge):
    """Tails a live run's store; `send` commands it through the store."""

    def __init__(self, cfg, run_dir):
        super().__init__(cfg)
        self.run_dir = Path(run_dir)
        self.process = _LiveRun()
        self.status = "running"
        self._con = sqlite3.connect(self.run_dir / DB_NAME, timeout=10.0, isolation_level=None)
        self._last = {"steps": -1, "clips": -1, "val": -1, "samples": 0, "events": 0}

    def more(self) -> list:
        if self.ended:
            return []
        with open_run(self.run_dir):                # marks a run whose recorder died 'killed'
            pass
        self.status = self._con.execute("SELECT status FROM run").fetchone()[0]
        rows = self._new_rows()
        if self.status in FINAL and not any(rows):  # every row read after it ended
            self.ended = True
            self.process.alive = False
            self._con.close()
            return []
        return list(merge_rows(*rows))

    def _new_rows(self) -> list[list]:
        """What each table committed since the last look (at most BATCH rows of each)."""
        last, q = self._last, self._con.execute
        steps = q("SELECT * FROM steps WHERE step > ? ORDER BY step LIMIT ?",
                  (last["steps"], BATCH)).fetchall()
        clips = q("SELECT * FROM clips WHERE step > ? ORDER BY step LIMIT ?",
                  (last["clips"], BATCH)).fetchall()
        val = q("SELECT * FROM val WHERE step > ? ORDER BY step", (last["val"],)).fetchall()
        samples = q("SELECT id, step, kind, payload FROM samples WHERE id > ? ORDER BY id LIMIT ?",
                    (last["samples"], BATCH)).fetchall()
        events = q("SELECT id, step, time, kind, payload FROM events WHERE id > ? ORDER BY id",
                   (last["events"],)).fetchall()
        for key, got in (("steps", steps), ("clips", clips), ("val", val),
                         ("samples", samples), ("events", events)):
            if got:
                last[key] = got[-1][0]              # the step, or the row id
        return [steps, clips, val,
                [(s, kind, json.loads(p)) for _id, s, kind, p in samples],
                [{**json.loads(p), "step": s, "time": t, "kind": kind}
                 for _id, s, t, kind, p in events]]

    def send(self, cmd: C.Command) -> None:
        if not self.ended:
            send_command(self.run_dir, cmd)


class _Script:
    """Stands in for a trainer process: the user's script (``lsml-tui run``)."""

    def __init__(self, popen):
        self.popen = popen

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def exitcode(self) -> int | None:
        return self.popen.poll()

    def is_alive(self) -> bool:
        return self.popen.poll() is None


class ScriptBridge(FollowBridge):
    """Follows the run of a script this dashboard started; its output reaches the output
    panel as ``ScriptOutput``, and stopping the bridge ends the script (SIGTERM: the run is
    recorded interrupted; SIGKILL if it has not ended after `timeout`)."""

    def __init__(self, cfg, run_dir, popen, output: str = "output.log"):
        super().__init__(cfg, run_dir)
        self.process = _Script(popen)
        self._output, self._read = self.run_dir / output, 0
        self._stopped = False
        self.ended_script = False

    @property
    def crashed(self) -> bool:
        """The script died and its run never said how it ended (the reader marked it
        killed): SIGKILL, a segfault, the out-of-memory killer."""
        return self.status == "killed"

    @crashed.setter
    def crashed(self, value) -> None:     # ReplayBridge sets it; here the store says
        pass

    def drain(self) -> list:
        return super().drain() + self._new_output()

    def _new_output(self) -> list:
        try:
            with open(self._output, "rb") as f:
                f.seek(self._read)
                data = f.read(1 << 20)
        except OSError:
            return []
        cut = data.rfind(b"\n") + 1 if not self.ended else len(data)   # whole lines only
        self._read += cut
        text = data[:cut].decode(errors="replace")
        return [ScriptOutput(text)] if text else []

    def stop(self, timeout: float = 10.0) -> list:
        if self._stopped:
            return []
        self._stopped = True
        self.ended_script = self.process.popen.poll() is None    # we ended it (q, a signal)
        end_script(self.process.popen, timeout)
        return []               # its last rows are in the store (read on this bridge's thread)


class ScriptOutput:
    """New lines of the script's stdout and stderr, for the output panel."""

    step = 0

    def __init__(self, text: str):
        self.text = text


def end_script(popen, grace: float = 10.0) -> int:
    """However the dashboard or ``lsml-tui run`` ends, the script does not outlive it:
    SIGTERM (its run is recorded interrupted), then SIGKILL after `grace` seconds; its
    exit status."""
    if popen.poll() is None:
        popen.send_signal(signal.SIGTERM)
        try:
            popen.wait(grace)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()
    return popen.returncode
