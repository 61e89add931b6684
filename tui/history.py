"""The run-history subcommands: ``lsml-tui report``, ``lsml-tui runs``, ``lsml-tui open``.

Each reads only the run store. Bad input (not a run directory, an unknown
format, an output directory that cannot be written) is refused with one line
and exit status 2 before anything is written.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from datetime import datetime
from pathlib import Path

from lsml_tui.trainer.config import ConfigError, suggest
from lsml_tui.trainer.store.reader import list_runs, open_run
from lsml_tui.trainer.store.repair import DAMAGED_NAME, damage, repair
from lsml_tui.trainer.store.schema import DB_NAME, LIVE
from lsml_tui.trainer.validate import check_out_dir

SUBCOMMANDS = ("report", "runs", "open", "repair")


def _run_dir(path: str, whole: bool = True) -> str:
    """`path` if it holds a run store (one SQLite can read whole, unless not `whole`)."""
    if not (Path(path) / DB_NAME).is_file():
        raise ConfigError(f"{path!r} is not a run directory (no {DB_NAME} in it); "
                          f"list runs with: lsml-tui runs")
    why = damage(path) if whole else None
    if why:
        raise ConfigError(f"{Path(path) / DB_NAME}: the run store is damaged ({why}); "
                          f"lsml-tui repair {path} copies what can still be read into a "
                          f"fresh store")
    return path


def parse_formats(text: str) -> list[str]:
    from lsml_tui.tui.report import FORMATS
    names = [f.strip() for f in text.split(",") if f.strip()]
    for name in names:
        if name not in FORMATS:
            raise ConfigError(f"--format {name!r} is not one of: {', '.join(FORMATS)}"
                              f"{suggest(name, FORMATS)}")
    if not names:
        raise ConfigError(f"--format is empty; allowed: {', '.join(FORMATS)}")
    return list(dict.fromkeys(names))


def _tensorboard_installed() -> None:
    """--format tensorboard: refused before anything is written when the extra is missing."""
    try:
        importlib.import_module("lsml_tui.tui.report.tensorboard")  # it imports tensorboard
    except ImportError as e:
        if (e.name or "").startswith("lsml_tui"):
            raise                       # our own bug, not a missing package
        raise ConfigError(f"--format tensorboard needs the optional tensorboard package "
                          f"(cannot import {e.name or e}); install it with: "
                          f"pip install 'lsml-tui[tensorboard]'") from None


def parser(prog: str, make) -> argparse.ArgumentParser:
    p = make(prog=prog, description="Reports, run history and replay.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=make)
    rep = sub.add_parser("report", help="write reports of one run, or a comparison of several")
    rep.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    rep.add_argument("--format", default="html,md,json,csv",
                     help="comma-separated: html, md, json, csv (default: these four), "
                     "tensorboard (event files, one per run; needs lsml-tui[tensorboard])")
    rep.add_argument("--out", metavar="DIR", help="where to write (default: the run directory, "
                     "or the runs directory for a comparison; tensorboard: DIR/<run id>/)")
    runs = sub.add_parser("runs", help="list the runs in a runs directory")
    runs.add_argument("--runs-dir", default="runs", metavar="DIR")
    opn = sub.add_parser("open", help="open a stored run in the dashboard: a finished run is "
                         "replayed read-only, a live one is followed and its controls work")
    opn.add_argument("run_dir", metavar="RUN_DIR")
    rep = sub.add_parser("repair", help="copy every row a damaged run store still holds into "
                         "a fresh one (the damaged file is kept as run.damaged.sqlite)")
    rep.add_argument("run_dir", metavar="RUN_DIR")
    return p


def main(argv: list[str], prog: str, make) -> int:
    args = parser(prog, make).parse_args(argv)
    if args.command == "report":
        dirs = [_run_dir(d) for d in args.run_dirs]
        formats = parse_formats(args.format)
        out = check_out_dir(args.out) if args.out else None
        if "tensorboard" in formats:
            _tensorboard_installed()
        from lsml_tui.tui.report import write_reports
        for path in write_reports(dirs, formats, out):
            print(path)
        return 0
    if args.command == "repair":
        run_dir = _run_dir(args.run_dir, whole=False)
        why = damage(run_dir)
        if why is None:
            print(f"{run_dir}: the run store reads whole; nothing to repair")
            return 0
        rows = repair(run_dir)
        print(f"{run_dir}: damaged ({why}); recovered "
              + ", ".join(f"{n:,} {table}" for table, n in rows.items() if n)
              + f"; the damaged file is kept as {DAMAGED_NAME}")
        return 0
    if args.command == "runs":
        if not Path(args.runs_dir).is_dir():
            raise ConfigError(f"--runs-dir {args.runs_dir!r} is not a directory")
        return print_runs(args.runs_dir)
    from lsml_tui.tui.app import LsmlApp
    run_dir = _run_dir(args.run_dir)
    with open_run(run_dir) as r:               # a run whose process died reads 'killed'
        live = r.info().status in LIVE
    app = LsmlApp.follow(run_dir) if live else LsmlApp.replay(run_dir)
    app.run()
    return 0


def print_runs(runs_dir: str) -> int:
    from rich.console import Console
    from rich.table import Table
    runs = list_runs(runs_dir)
    console = Console(width=None if sys.stdout.isatty() else 200)   # piped: never cut an id
    if not runs:
        console.print(f"no runs in {runs_dir}")
        return 0
    table = Table(box=None, header_style="bold")
    for name in ("id", "model", "optimizer", "norm", "steps", "final loss", "status", "started"):
        table.add_column(name, no_wrap=name in ("id", "started"),
                         justify="right" if name in ("steps", "final loss") else "left")
    for r in runs:
        final = r.summary or {}     # after live switches, where the run recorded its end
        switched = lambda key, first: (f"{first}->{final[key]}"  # noqa: E731
                                       if final.get(key, first) != first else first)
        table.add_row(r.id, r.model, switched("optimizer", r.optimizer), switched("norm", r.norm),
                      f"{r.steps:,}",
                      "N/A" if r.final_loss is None else f"{r.final_loss:.4g}",
                      f"damaged: {r.summary['damaged']}; lsml-tui repair" if r.status == "damaged"
                      and r.summary and "damaged" in r.summary else r.status,
                      datetime.fromtimestamp(r.created).strftime("%Y-%m-%d %H:%M:%S"))
    console.print(table)
    return 0
