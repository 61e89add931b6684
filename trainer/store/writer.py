"""Writing a run: ``runs/<id>/run.sqlite`` (WAL) plus ``config.toml``. No torch here.

One writer thread owns the write connection and commits batched transactions at
most ``flush_interval`` seconds apart, so a SIGKILL loses at most that much.
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import socket
import sqlite3
import threading
import time
from collections import Counter
from functools import partial
from pathlib import Path

import psutil

from lsml_tui.trainer.events import event_kind, event_payload
from lsml_tui.trainer.store.inbox import watch_commands
from lsml_tui.trainer.store.schema import (COMMANDS_SCHEMA, CONFIG_NAME, DB_NAME, FINAL, SCHEMA,
                                           SCHEMA_VERSION, connect, json_default, json_safe,
                                           write_atomic)

# Metric rows may be dropped when the disk is full and the buffer is at its bound; run
# status and events never are.
METRICS = {"INSERT OR REPLACE INTO steps VALUES (?,?,?,?,?,?,?,?)": "steps",
           "INSERT OR REPLACE INTO clips VALUES (?,?,?,?)": "clips",
           "INSERT INTO samples (step, time, kind, payload) VALUES (?,?,?,?)": "samples",
           "INSERT OR REPLACE INTO val VALUES (?,?,?)": "val"}
SQL = {table: sql for sql, table in METRICS.items()}


def new_run_id(model: str) -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{model}-{secrets.token_hex(2)}"


class RunStore:
    """Append-only writer for one run. All writes go through one thread."""

    def __init__(self, run_dir: Path, flush_interval: float = 0.25, max_pending: int = 200_000):
        self.run_dir = Path(run_dir)
        self.run_id = self.run_dir.name
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._flush_interval = flush_interval
        self.max_pending = max_pending      # rows held while writes fail (disk full)
        self.write_errors = 0
        self.dropped: Counter = Counter()   # table -> metric rows dropped at the bound
        self.on_problem = None              # called (message, rows dropped) from the writer
        self._failing = False
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._writer, name="run-store-writer", daemon=True)
        self._thread.start()

    @classmethod
    def create(cls, runs_dir: str | os.PathLike, config: dict, config_toml: str,
               flush_interval: float = 0.25, run_dir: str | os.PathLike | None = None
               ) -> "RunStore":
        """Make ``runs_dir/<id>/`` (or `run_dir`, chosen by a launcher) with its database and
        config; return the open store."""
        run_dir = Path(run_dir) if run_dir else Path(runs_dir) / new_run_id(config["model"])
        run_dir.mkdir(parents=True, exist_ok=True)
        if (run_dir / DB_NAME).exists():
            raise FileExistsError(f"{run_dir} already holds a run")
        write_atomic(run_dir / CONFIG_NAME, config_toml)
        # Made under another name and renamed whole: a reader (lsml-tui runs, open, a test
        # waiting for the run) never finds a store without its tables.
        creating = run_dir / f"{DB_NAME}.creating"
        creating.unlink(missing_ok=True)
        con = connect(creating)
        with con:
            con.executescript(SCHEMA + COMMANDS_SCHEMA)
            con.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            me = psutil.Process()
            con.execute(
                "INSERT INTO run (id, model, optimizer, norm, created, status, pid, pid_started,"
                " host, config) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (run_dir.name, config["model"], config["optimizer"], config["norm"], time.time(),
                 "running", me.pid, me.create_time(), socket.gethostname(), json.dumps(config)))
        con.close()                 # the last connection: SQLite folds its WAL file back in
        os.replace(creating, run_dir / DB_NAME)
        return cls(run_dir, flush_interval)

    # -- writes (queued; the writer thread commits them in batches) --

    def record_step(self, step: int, t: float, loss: float, lr: float, grad_norm: float,
                    grad_norm_clipped: float, clipped: bool, examples_per_second: float) -> None:
        self._queue.put((SQL["steps"],
                         (step, t, loss, lr, grad_norm, grad_norm_clipped, int(clipped),
                          examples_per_second)))

    def record_clip(self, step: int, grad_norm: float, threshold: float, scale: float) -> None:
        self._queue.put((SQL["clips"],
                         (step, grad_norm, threshold, scale)))

    def record_sample(self, event) -> None:
        """A sampled profile (layers, memory, timing, flops, system) as JSON, made on the
        writer thread: the training loop only queues the (frozen) event."""
        self._queue.put((SQL["samples"], partial(_row, event, time.time())))

    def record_val(self, step: int, t: float, loss: float) -> None:
        self._queue.put((SQL["val"], (step, t, loss)))

    def record_event(self, event) -> None:
        self._queue.put(("INSERT INTO events (step, time, kind, payload) VALUES (?,?,?,?)",
                         partial(_row, event, time.time())))

    def set_status(self, status: str, summary: dict | None = None) -> None:
        ended = time.time() if status in FINAL else None
        self._queue.put(("UPDATE run SET status=?, ended=?, summary=?",
                         (status, ended, json.dumps(summary) if summary is not None else None)))

    def sync(self, timeout: float = 5.0) -> bool:
        """Wait until everything queued so far is committed (or its commit was tried and
        failed: a full disk must not hold a run's end); False after `timeout` seconds."""
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def close(self) -> None:
        """Commit everything queued and stop the writer (and the command watcher)."""
        self._closed.set()
        self._queue.put(None)
        self._thread.join()

    def watch_commands(self, submit) -> None:
        """Hand `submit` every command another process puts in the commands table, from now
        on, until the store closes (inbox.py)."""
        watch_commands(self.run_dir, self._closed, submit)

    def _writer(self) -> None:
        con = connect(self.run_dir / DB_NAME)
        pending: list = []
        synced: list[threading.Event] = []      # sync() callers, told after the commit
        stop = False
        while not stop:
            try:
                item = self._queue.get(timeout=self._flush_interval)
                while True:
                    if item is None:
                        stop = True
                        break
                    if isinstance(item, threading.Event):
                        synced.append(item)
                        if not pending:
                            break                   # nothing before it to commit
                        item = self._queue.get_nowait()
                        continue
                    # the disk full for long: drop metric rows past the bound (a burst
                    # while writes succeed is never dropped, however large)
                    if self._failing and len(pending) >= self.max_pending \
                            and item[0] in METRICS:
                        self.dropped[METRICS[item[0]]] += 1
                    else:
                        pending.append(item)
                    item = self._queue.get_nowait()
            except queue.Empty:
                pass
            if pending:
                try:
                    commit(con, pending)
                    pending = []
                    if self._failing:
                        self._failing = False
                        self._tell(f"recording resumed after {self.write_errors} failed writes")
                except sqlite3.Error as e:
                    self.write_errors += 1  # keep the batch and retry on the next tick
                    if not self._failing:
                        self._failing = True
                        self._tell(f"cannot write the run store ({e}); holding up to "
                                   f"{self.max_pending:,} rows, then dropping metrics")
                    if stop:
                        break
            for done in synced:
                done.set()
            synced = []
            if not stop:
                time.sleep(self._flush_interval / 4)  # gather a batch; bounds commit rate
        con.close()

    def _tell(self, message: str) -> None:
        """Report a recording problem or its end (on the writer thread)."""
        if self.on_problem is not None:
            self.on_problem(message, sum(self.dropped.values()))


def _row(event, t: float) -> tuple:
    """An event's row: (step, time, kind, its fields as JSON)."""
    return (event.step, t, event_kind(event),
            json.dumps(json_safe(event_payload(event)), default=json_default))


def commit(con: sqlite3.Connection, items: list) -> None:
    con.execute("BEGIN")
    try:
        i = 0
        while i < len(items):  # runs of the same statement go through executemany
            sql = items[i][0]
            j = i
            while j < len(items) and items[j][0] == sql:
                j += 1
            con.executemany(sql, [params() if callable(params) else params  # a deferred row
                                  for _, params in items[i:j]])
            i = j
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def mark_failed(run_dir: str | os.PathLike, message: str, tb: str) -> dict:
    """A launcher's word after a rank died: the run is ``failed`` and says which rank.

    Rank 0, the writer, has ended by then (it may be the rank that died), so this is
    the only write; what rank 0 recorded stays. Returns the run's summary, updated.
    """
    db = Path(run_dir) / DB_NAME
    summary = {"run_dir": str(run_dir), "status": "failed", "error": message}
    if not db.is_file():                        # rank 0 died before it made the store
        return summary
    con = connect(db)
    try:
        row = con.execute("SELECT summary FROM run").fetchone()
        summary = {**(json.loads(row[0]) if row and row[0] else {}), **summary}
        step = con.execute("SELECT COALESCE(MAX(step) + 1, 0) FROM steps").fetchone()[0]
        payload = {"step": step, "error": message, "traceback": tb}
        with con:
            con.execute("INSERT INTO events (step, time, kind, payload) VALUES (?,?,?,?)",
                        (step, time.time(), "RunFailed", json.dumps(payload)))
            con.execute("UPDATE run SET status='failed', ended=?, summary=?",
                        (time.time(), json.dumps(json_safe(summary))))
    finally:
        con.close()
    return summary
