"""The commands table: how a dashboard that did not start a run (``lsml-tui open``)
commands it. The dashboard inserts a row; the run's recorder polls for new ones. The
only table a second process writes. No torch here."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

from lsml_tui.trainer.commands import from_json, to_json
from lsml_tui.trainer.store.schema import COMMANDS_SCHEMA, DB_NAME, connect

COMMAND_POLL = 0.25     # seconds between the recorder's looks at the commands table


def send_command(run_dir: str | os.PathLike, cmd) -> None:
    """Queue `cmd` for a live run through its store (the run applies it between steps)."""
    con = connect(Path(run_dir) / DB_NAME)
    try:
        with con:
            con.executescript(COMMANDS_SCHEMA)          # a store made before the table existed
            con.execute("INSERT INTO commands (time, payload) VALUES (?, ?)",
                        (time.time(), to_json(cmd)))
    finally:
        con.close()


def watch_commands(run_dir: str | os.PathLike, closed: threading.Event, submit) -> None:
    """Hand `submit` every command put in the commands table from now on, until `closed` is
    set (a thread polls every COMMAND_POLL seconds: nothing is added to a training step)."""
    def poll() -> None:
        con = sqlite3.connect(Path(run_dir) / DB_NAME, timeout=10.0, isolation_level=None)
        try:
            seen = con.execute("SELECT COALESCE(MAX(id), 0) FROM commands").fetchone()[0]
            while not closed.wait(COMMAND_POLL):
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
