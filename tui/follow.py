"""Following a run that is still going, through its store: ``lsml-tui open`` on a headless,
torchrun or other dashboard's run. New rows reach the panels as the run commits them;
commands go into the store's commands table, which the run's recorder polls.
"""

from __future__ import annotations

import json
import sqlite3
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
