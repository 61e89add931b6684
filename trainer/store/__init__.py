"""The run store, ``runs/<id>/run.sqlite`` (SQLite, WAL) beside ``config.toml``: its
tables and safe writes (``schema``), the one writer of a run (``writer``), the readers
every view uses (``reader``), the commands table through which a dashboard that did not
start a run commands it (``inbox``), and a damaged store's repair (``repair``).

May import ``lsml_tui.trainer.commands`` and ``lsml_tui.trainer.events``, psutil and the
standard library; never torch, so the UI reads runs without it.
"""
