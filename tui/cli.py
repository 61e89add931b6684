"""The ``lsml-tui`` command line: parse, validate, then train headless or open the dashboard.

Bad input is refused before anything starts: one line on stderr naming the bad
value and what is allowed, exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from lsml_tui.tui import history
from lsml_tui.tui.history import SUBCOMMANDS
from lsml_tui.trainer.config import (FIELDS, ConfigError, RunConfig, check_runs_dir, flag,
                                     load_toml, parse_value, resolve, to_toml)

PROG = "lsml-tui"
TOOLS = {"lr-find": "lsml_tui.tui.lrfind", "sweep": "lsml_tui.tui.sweep"}  # main(argv, prog, make)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse would print the usage too)
        print(f"{PROG}: error: {message} (see {PROG} --help)", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Watch a neural network train and see what it costs. "
                "Also: lsml-tui report RUN_DIR..., lsml-tui runs, lsml-tui open RUN_DIR, "
                "lsml-tui lr-find, lsml-tui sweep (each with --help).",
                argument_default=argparse.SUPPRESS)
    p.add_argument("--headless", action="store_true", help="train without the dashboard, "
                   "with a progress bar on stderr")
    p.add_argument("--json", action="store_true", help="with --headless: print a JSON summary "
                   "on stdout at the end")
    p.add_argument("--print-config", action="store_true", help="print the effective config as "
                   "TOML and exit")
    p.add_argument("--no-progress", action="store_true", help="with --headless: no progress bar")
    return add_run_flags(p)


def add_run_flags(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """--config and one flag per RunConfig field (lr-find and sweep take them too). The parser
    must be made with ``argument_default=argparse.SUPPRESS``: ``config_from_args`` reads a
    flag left out as absent, so the TOML file and the defaults show through."""
    p.add_argument("--config", metavar="TOML", help="read options from a TOML file "
                   "(flags override)")
    for name, f in FIELDS.items():
        flags = [flag(name), *f.metadata.get("aliases", ())]
        if f.metadata["kind"] == "bool":
            p.add_argument(*flags, dest=name, action=argparse.BooleanOptionalAction,
                           help=f.metadata["help"])
        elif "const" in f.metadata:             # the flag alone means this value
            p.add_argument(*flags, dest=name, metavar=name.upper(), nargs="?",
                           const=f.metadata["const"], help=f.metadata["help"])
        else:
            p.add_argument(*flags, dest=name, metavar=name.upper(), help=f.metadata["help"])
    return p


def values_from_args(args: argparse.Namespace) -> dict:
    """The run-config values the flags and the --config file give (flags win), no default
    filled: a sweep lays each trial's values over them before ``resolve``."""
    values = load_toml(args.config) if "config" in args else {}
    for name, f in FIELDS.items():
        if name in args:
            raw = getattr(args, name)
            values[name] = raw if f.metadata["kind"] == "bool" else parse_value(name, raw)
    return values


def config_from_args(args: argparse.Namespace, watched: bool | None = None) -> RunConfig:
    """defaults < --config file < flags; then validate and fill every default. A run someone
    watches (the dashboard; by default, any run without --headless) pauses on divergence."""
    values = values_from_args(args)
    if ("headless" not in args) if watched is None else watched:
        values.setdefault("on_diverge", "pause")    # a person is watching: let them fix it
    return resolve(RunConfig(**values))


def run_dashboard(cfg: RunConfig) -> int:
    """Open the dashboard; the trainer runs in its own process. No torch in this one."""
    from lsml_tui.tui import lifeline
    from lsml_tui.tui.app import LsmlApp
    app = LsmlApp(cfg)
    lifeline.install()          # before the app takes the terminal: covers its start and exit
    try:
        status = app.run()
    finally:                    # however the app ended, the trainer does not outlive it
        if app.bridge is not None:
            app.bridge.stop()
    if app.run_dir:
        try:
            print(f"{PROG}: run {status or 'ended'}; stored in {app.run_dir}", file=sys.stderr,
                  flush=True)
        except OSError:         # the terminal is gone (EIO): nobody to tell
            pass
    return 128 + app.return_signal if app.return_signal else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in TOOLS:               # lsml-tui lr-find ..., lsml-tui sweep ...
        module = importlib.import_module(TOOLS[argv[0]])
        try:
            return module.main(argv[1:], f"{PROG} {argv[0]}", _Parser)
        except ConfigError as e:
            print(f"{PROG}: error: {e}", file=sys.stderr)
            return 2
    if argv and argv[0] in SUBCOMMANDS:
        try:
            return history.main(argv, PROG, _Parser)
        except ConfigError as e:
            print(f"{PROG}: error: {e}", file=sys.stderr)
            return 2
    args = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
        if "print_config" in args:
            print(to_toml(cfg), end="")
            return 0
        check_runs_dir(cfg.runs_dir)
        if "headless" in args:
            from lsml_tui.trainer.headless import run_headless  # imports torch
            return run_headless(cfg, json_out="json" in args, progress="no_progress" not in args)
        if cfg.device != "cpu" and (cfg.device != "auto" or cfg.workers > 1
                                    or cfg.precision in ("tf32", "bf16")):
            from lsml_tui.trainer.launch import preflight   # a GPU it lacks, more CUDA ranks
            preflight(cfg)                                  # than GPUs: refused now (torch)
        return run_dashboard(cfg)
    except ConfigError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
