"""Reading runs: one run's info and series (``open_run``), every run in a directory
(``list_runs``). What the dashboard's replay and follow, the reports and ``lsml-tui runs``
use. Opening a run left ``running`` by a process that no longer exists marks it
``killed``. No torch here."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from lsml_tui.trainer.store.schema import DB_NAME, LIVE


@dataclass(frozen=True)
class RunInfo:
    id: str
    run_dir: str
    model: str
    optimizer: str
    norm: str
    status: str
    created: float
    ended: float | None
    config: dict
    summary: dict | None
    steps: int                      # steps recorded
    final_loss: float | None


def _process_alive(pid: int, started: float) -> bool:
    try:
        return abs(psutil.Process(pid).create_time() - started) < 1.0
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return False


class RunReader:
    """Read one run's store: its info and its series."""

    def __init__(self, run_dir: str | os.PathLike):
        self.run_dir = Path(run_dir)
        db = self.run_dir / DB_NAME
        if not db.is_file():
            raise FileNotFoundError(f"no run store at {db}")
        self._con = sqlite3.connect(db, timeout=10.0, isolation_level=None)
        self._mark_killed_if_orphaned()

    def _mark_killed_if_orphaned(self) -> None:
        row = self._con.execute("SELECT status, pid, pid_started, host FROM run").fetchone()
        if row and row[0] in LIVE and row[3] == socket.gethostname() and not _process_alive(row[1], row[2]):
            last = self._con.execute("SELECT MAX(time) FROM steps").fetchone()[0]
            self._con.execute("UPDATE run SET status='killed', ended=? WHERE status='running'",
                              (last or time.time(),))

    def close(self) -> None:
        self._con.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def info(self) -> RunInfo:
        r = self._con.execute("SELECT id, model, optimizer, norm, status, created, ended, config,"
                              " summary FROM run").fetchone()
        n, = self._con.execute("SELECT COUNT(*) FROM steps").fetchone()
        last = self._con.execute("SELECT loss FROM steps ORDER BY step DESC LIMIT 1").fetchone()
        return RunInfo(id=r[0], run_dir=str(self.run_dir), model=r[1], optimizer=r[2], norm=r[3],
                       status=r[4], created=r[5], ended=r[6], config=json.loads(r[7]),
                       summary=json.loads(r[8]) if r[8] else None, steps=n,
                       final_loss=last[0] if last else None)

    def steps(self, since: int = -1) -> dict[str, list]:
        """Per-step columns (step, time, loss, lr, grad_norm, clipped, examples_per_second)."""
        return _columns(self._con.execute("SELECT * FROM steps WHERE step > ? ORDER BY step",
                                          (since,)))

    def clips(self) -> dict[str, list]:
        """Clip events: step, grad_norm (before), threshold, scale."""
        return _columns(self._con.execute("SELECT * FROM clips ORDER BY step"))

    def samples(self, kind: str) -> list[dict]:
        rows = self._con.execute("SELECT step, payload FROM samples WHERE kind = ? ORDER BY id",
                                 (kind,)).fetchall()
        return [{**json.loads(p), "step": s} for s, p in rows]

    def val(self) -> dict[str, list]:
        rows = self._con.execute("SELECT step, loss FROM val ORDER BY step").fetchall()
        return {"step": [r[0] for r in rows], "loss": [r[1] for r in rows]}

    def events(self, kind: str | None = None, since_id: int = 0) -> list[dict]:
        sql = "SELECT id, step, time, kind, payload FROM events WHERE id > ?"
        args: tuple = (since_id,)
        if kind is not None:
            sql, args = sql + " AND kind = ?", (since_id, kind)
        rows = self._con.execute(sql + " ORDER BY id", args).fetchall()
        return [{"id": r[0], "step": r[1], "time": r[2], "kind": r[3], **json.loads(r[4])}
                for r in rows]

    def iter_rows(self, table: str):
        """Rows of `steps`, `clips`, `val` or `samples` in step order, read as they are
        iterated (a million-step run is never loaded at once). Samples come as
        (step, kind, payload dict)."""
        if table == "samples":
            for step, kind, payload in self._con.execute(
                    "SELECT step, kind, payload FROM samples ORDER BY step, id"):
                yield step, kind, json.loads(payload)
        elif table in ("steps", "clips", "val"):
            yield from self._con.execute(f"SELECT * FROM {table} ORDER BY step")
        else:
            raise ValueError(f"no table {table!r} to iterate")

    def integrity_ok(self) -> bool:
        return self._con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def _columns(cur: sqlite3.Cursor) -> dict[str, list]:
    names = [d[0] for d in cur.description]
    rows = cur.fetchall()
    return {name: [row[i] for row in rows] for i, name in enumerate(names)}


def open_run(run_dir: str | os.PathLike) -> RunReader:
    return RunReader(run_dir)


def list_runs(runs_dir: str | os.PathLike) -> list[RunInfo]:
    """Every run under `runs_dir`, oldest first; one whose store cannot be read is listed
    with the status ``damaged`` and SQLite's reason in its summary."""
    out = []
    for db in sorted(Path(runs_dir).glob(f"*/{DB_NAME}")):
        try:
            with RunReader(db.parent) as r:
                out.append(r.info())
        except sqlite3.Error as e:
            out.append(_damaged(db, str(e)))
    return sorted(out, key=lambda i: i.created)


def _damaged(db: Path, reason: str) -> RunInfo:
    return RunInfo(id=db.parent.name, run_dir=str(db.parent), model="?", optimizer="?",
                   norm="?", status="damaged", created=db.stat().st_mtime, ended=None,
                   config={}, summary={"damaged": reason}, steps=0, final_loss=None)
