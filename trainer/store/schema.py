"""The run store's layout on disk: the tables of ``run.sqlite``, its file names, the run
statuses, and how a file or a JSON value is written safely. No torch here."""

from __future__ import annotations

import math
import os
import sqlite3
from pathlib import Path

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
LIVE, FINAL = ("running",), ("finished", "diverged", "failed", "interrupted", "killed",
                              "pruned",     # pruned: lsml-tui sweep stopped it early
                              "damaged")    # damaged: its store could not be read whole
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


def json_default(value):
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


def connect(db: Path) -> sqlite3.Connection:
    con = sqlite3.connect(db, timeout=10.0, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL survives a process kill
    return con
