"""A damaged run store: how it is found out, and ``lsml-tui repair``, which copies every row
that can still be read into a fresh store. No torch here.

A store is damaged when SQLite cannot read it: a file that is not a database, or one cut
short (a full disk during a copy, ``truncate``). ``repair`` keeps the damaged file beside
the new one (``run.damaged.sqlite``); on a copy of it, whose header is made to say the
pages the file still has (else SQLite reads none of a cut file), it reads each table in
row order, skips past a page it cannot read, and writes what it read into a fresh
``run.sqlite`` that every reader opens.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import struct
import time
import tomllib
from pathlib import Path

from lsml_tui.trainer.store.schema import (COMMANDS_SCHEMA, CONFIG_NAME, DB_NAME, SCHEMA,
                                           SCHEMA_VERSION, connect)

DAMAGED_NAME = "run.damaged.sqlite"
TABLES = ("run", "steps", "clips", "val", "samples", "events", "commands")
MAX_MISSES = 24         # unreadable jumps in a row (1, 2, 4, ... rows ahead) before a table ends


def damage(run_dir: str | os.PathLike) -> str | None:
    """SQLite's word on why the store cannot be read, or None when it reads whole."""
    try:    # opened as the readers open it: closing it then leaves no -wal or -shm file
        con = sqlite3.connect(Path(run_dir) / DB_NAME, timeout=10.0)
        try:
            con.execute("SELECT id, status, config FROM run").fetchone()
            verdict = con.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error as e:
        return str(e)
    return None if verdict == "ok" else verdict


def _rows(src: sqlite3.Connection, table: str) -> list[tuple]:
    """Every row of `table` that can be read, in rowid order, skipping unreadable pages."""
    out: list[tuple] = []
    after, jump, misses = -(1 << 62), 1, 0
    while misses < MAX_MISSES:
        try:
            for row in src.execute(f"SELECT rowid, * FROM {table} WHERE rowid > ? "
                                   f"ORDER BY rowid", (after,)):
                out.append(row[1:])
                after, jump, misses = row[0], 1, 0
            return out
        except sqlite3.Error:
            if after == -(1 << 62):
                return out                  # not even the table's first page: nothing here
            after += jump                   # past the page it could not read
            jump, misses = jump * 2, misses + 1
    return out


def repair(run_dir: str | os.PathLike) -> dict[str, int]:
    """Copy what can be read into a fresh store; return rows recovered per table."""
    run_dir = Path(run_dir)
    damaged = run_dir / DAMAGED_NAME
    for suffix in ("", "-wal", "-shm"):           # SQLite reads the WAL beside its file
        part = run_dir / (DB_NAME + suffix)
        if part.exists():
            os.replace(part, run_dir / (DAMAGED_NAME + suffix))
    recovered: dict[str, list] = {t: [] for t in TABLES}
    work = run_dir / f".{DAMAGED_NAME}.{os.getpid()}.work"     # read from a copy: the damaged
    try:                                                       # file is kept as it was
        shutil.copyfile(damaged, work)
        wal = run_dir / (DAMAGED_NAME + "-wal")        # the last commits, if any are left
        if wal.exists():
            shutil.copyfile(wal, Path(f"{work}-wal"))
        _fit_header(work)
        src = sqlite3.connect(f"file:{work}?mode=ro", uri=True)
        try:
            for table in TABLES:
                recovered[table] = _rows(src, table)
        finally:
            src.close()
    except (OSError, sqlite3.Error):
        pass                                        # not a database at all: nothing to read
    finally:
        for leftover in (work, Path(f"{work}-wal"), Path(f"{work}-shm")):
            leftover.unlink(missing_ok=True)
    if not recovered["run"]:
        recovered["run"] = [_run_row(run_dir)]
    con = connect(run_dir / DB_NAME)
    try:
        with con:
            con.executescript(SCHEMA + COMMANDS_SCHEMA)
            con.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            for table, rows in recovered.items():
                rows = [r for r in rows if r]
                if rows:
                    marks = ",".join("?" * len(rows[0]))
                    con.executemany(f"INSERT OR REPLACE INTO {table} VALUES ({marks})", rows)
    finally:
        con.close()
    return {t: len(r) for t, r in recovered.items()}


def _fit_header(path: Path) -> None:
    """A file cut short still says in its header how many pages it had, and SQLite then
    reads none of it: make the header say the pages the file has (whole pages only)."""
    with open(path, "r+b") as f:
        head = f.read(100)
        if len(head) < 100 or not head.startswith(b"SQLite format 3\0"):
            return
        page = struct.unpack(">H", head[16:18])[0]
        page = 65536 if page == 1 else page
        pages = path.stat().st_size // page
        if pages < struct.unpack(">I", head[28:32])[0]:
            f.truncate(pages * page)
            f.seek(28)
            f.write(struct.pack(">I", pages))


def _run_row(run_dir: Path) -> tuple:
    """The run table's row when it was lost: what config.toml says, status 'damaged'."""
    try:
        config = tomllib.loads((run_dir / CONFIG_NAME).read_text())
    except (OSError, tomllib.TOMLDecodeError):
        config = {}
    created = (run_dir / DAMAGED_NAME).stat().st_mtime if (run_dir / DAMAGED_NAME).exists() \
        else time.time()
    return (run_dir.name, config.get("model", "?"), config.get("optimizer", "?"),
            config.get("norm", "?"), created, created, "damaged", None, None, None,
            json.dumps(config), None)
