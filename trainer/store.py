"""The run store: ``runs/<id>/run.sqlite`` (WAL) plus ``config.toml``. No torch here.

One writer thread owns the write connection and commits batched transactions at
most ``flush_interval`` seconds apart, so a SIGKILL loses at most that much. The
reader side (``open_run``, ``list_runs``) is what the UI, replay and reports use;
opening a run left ``running`` by a process that no longer exists marks it
``killed``.
"""

from __future__ import annotations

import json
import math
import os
import queue
import secrets
import socket
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import psutil

from .commands import from_json, to_json
from .events import event_kind, event_payload

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS run (
    id TEXT PRIMARY KEY, model TEXT, optimizer TEXT, norm TEXT,
    created REAL, ended REAL, status TEXT,
    pid INTEGER, pid_started REAL, host TEXT,
    config TEXT, summary TEXT
);
CREATE TABLE IF NOT EXISTS steps (
    step INTEGER PRIMARY KEY, time REAL, loss REAL, lr REAL,
    grad_norm REAL, grad_norm_clipped REAL, clipped INTEGER, examples_per_second REAL
);
CREATE TABLE IF NOT EXISTS clips (
    step INTEGER PRIMARY KEY, grad_norm REAL, threshold REAL, scale REAL
);
CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY AUTOINCREMENT, step INTEGER, time REAL, kind TEXT, payload TEXT
);
CREATE TABLE IF NOT EXISTS val (step INTEGER PRIMARY KEY, time REAL, loss REAL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, step INTEGER, time REAL, kind TEXT, payload TEXT
);
"""
# Commands for a live run from a dashboard that did not start it (lsml-tui open): the
# dashboard inserts, the run's recorder polls. The only table another process writes.
COMMANDS_SCHEMA = """
CREATE TABLE IF NOT EXISTS commands (id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL, payload TEXT);
"""
COMMAND_POLL = 0.25     # seconds between the recorder's looks at the commands table
# Metric rows may be dropped when the disk is full and the buffer is at its bound; run
# status and events never are.
METRICS = {"INSERT OR REPLACE INTO steps VALUES (?,?,?,?,?,?,?,?)": "steps",
           "INSERT OR REPLACE INTO clips VALUES (?,?,?,?)": "clips",
           "INSERT INTO samples (step, time, kind, payload) VALUES (?,?,?,?)": "samples",
           "INSERT OR REPLACE INTO val VALUES (?,?,?)": "val"}
SQL = {table: sql for sql, table in METRICS.items()}
LIVE, FINAL = ("running",), ("finished", "diverged", "failed", "interrupted", "killed",
                              "pruned")     # pruned: lsml-tui sweep stopped it early
DB_NAME, CONFIG_NAME = "run.sqlite", "config.toml"


def write_atomic(path: str | os.PathLike, data: str | bytes) -> None:
    """Write to a temporary name beside `path`, fsync, then rename into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    mode = "wb" if isinstance(data, bytes) else "w"
    try:
        with open(tmp, mode) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _json_default(value):
    return str(value)


def json_safe(value):
    """NaN, N/A and infinities become null: JSON has none of them (the event's message
    still says which it was)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def _connect(db: Path) -> sqlite3.Connection:
    con = sqlite3.connect(db, timeout=10.0, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL survives a process kill
    return con


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
        con = _connect(run_dir / DB_NAME)
        with con:
            con.executescript(SCHEMA + COMMANDS_SCHEMA)
            con.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            me = psutil.Process()
            con.execute(
                "INSERT INTO run (id, model, optimizer, norm, created, status, pid, pid_started,"
                " host, config) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (run_dir.name, config["model"], config["optimizer"], config["norm"], time.time(),
                 "running", me.pid, me.create_time(), socket.gethostname(), json.dumps(config)))
        con.close()
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
        """A sampled profile (layers, memory, timing, flops, system) as JSON."""
        self._queue.put((SQL["samples"],
                         (event.step, time.time(), event_kind(event),
                          json.dumps(json_safe(event_payload(event)), default=_json_default))))

    def record_val(self, step: int, t: float, loss: float) -> None:
        self._queue.put((SQL["val"], (step, t, loss)))

    def record_event(self, event) -> None:
        self._queue.put(("INSERT INTO events (step, time, kind, payload) VALUES (?,?,?,?)",
                         (event.step, time.time(), event_kind(event),
                          json.dumps(json_safe(event_payload(event)), default=_json_default))))

    def set_status(self, status: str, summary: dict | None = None) -> None:
        ended = time.time() if status in FINAL else None
        self._queue.put(("UPDATE run SET status=?, ended=?, summary=?",
                         (status, ended, json.dumps(summary) if summary is not None else None)))

    def close(self) -> None:
        """Commit everything queued and stop the writer (and the command watcher)."""
        self._closed.set()
        self._queue.put(None)
        self._thread.join()

    def watch_commands(self, submit) -> None:
        """Hand `submit` every command another process puts in the commands table, from now
        on (a thread polls every COMMAND_POLL seconds: nothing is added to a training step)."""
        def poll() -> None:
            con = sqlite3.connect(self.run_dir / DB_NAME, timeout=10.0, isolation_level=None)
            try:
                seen = con.execute("SELECT COALESCE(MAX(id), 0) FROM commands").fetchone()[0]
                while not self._closed.wait(COMMAND_POLL):
                    for cid, payload in con.execute(
                            "SELECT id, payload FROM commands WHERE id > ? ORDER BY id", (seen,)):
                        seen = cid
                        try:
                            submit(from_json(payload))
                        except ValueError:
                            continue        # a malformed row: skip it, keep listening
            except sqlite3.Error:
                return                      # the store went away with its run
            finally:
                con.close()
        threading.Thread(target=poll, name="run-store-commands", daemon=True).start()

    def _writer(self) -> None:
        con = _connect(self.run_dir / DB_NAME)
        pending: list = []
        stop = False
        while not stop:
            try:
                item = self._queue.get(timeout=self._flush_interval)
                while True:
                    if item is None:
                        stop = True
                        break
                    if len(pending) >= self.max_pending and item[0] in METRICS:
                        self.dropped[METRICS[item[0]]] += 1      # disk full for long: drop
                    else:
                        pending.append(item)
                    item = self._queue.get_nowait()
            except queue.Empty:
                pass
            if pending:
                try:
                    _commit(con, pending)
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
            if not stop:
                time.sleep(self._flush_interval / 4)  # gather a batch; bounds commit rate
        con.close()

    def _tell(self, message: str) -> None:
        """Report a recording problem or its end (on the writer thread)."""
        if self.on_problem is not None:
            self.on_problem(message, sum(self.dropped.values()))


def _commit(con: sqlite3.Connection, items: list) -> None:
    con.execute("BEGIN")
    try:
        i = 0
        while i < len(items):  # runs of the same statement go through executemany
            sql = items[i][0]
            j = i
            while j < len(items) and items[j][0] == sql:
                j += 1
            con.executemany(sql, [params for _, params in items[i:j]])
            i = j
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def send_command(run_dir: str | os.PathLike, cmd) -> None:
    """Queue `cmd` for a live run through its store (the run applies it between steps)."""
    con = _connect(Path(run_dir) / DB_NAME)
    try:
        with con:
            con.executescript(COMMANDS_SCHEMA)          # a store made before the table existed
            con.execute("INSERT INTO commands (time, payload) VALUES (?, ?)",
                        (time.time(), to_json(cmd)))
    finally:
        con.close()


def mark_failed(run_dir: str | os.PathLike, message: str, tb: str) -> dict:
    """A launcher's word after a rank died: the run is ``failed`` and says which rank.

    Rank 0, the writer, has ended by then (it may be the rank that died), so this is
    the only write; what rank 0 recorded stays. Returns the run's summary, updated.
    """
    db = Path(run_dir) / DB_NAME
    summary = {"run_dir": str(run_dir), "status": "failed", "error": message}
    if not db.is_file():                        # rank 0 died before it made the store
        return summary
    con = _connect(db)
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


# -- reading ------------------------------------------------------------------


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
    """Every readable run under `runs_dir`, oldest first."""
    out = []
    for db in sorted(Path(runs_dir).glob(f"*/{DB_NAME}")):
        try:
            with RunReader(db.parent) as r:
                out.append(r.info())
        except sqlite3.Error:
            continue
    return sorted(out, key=lambda i: i.created)
