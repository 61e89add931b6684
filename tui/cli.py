"""The ``lsml-tui`` command line: parse, validate, then train headless or open the dashboard.

Bad input is refused before anything starts: one line on stderr naming the bad
value and what is allowed, exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from lsml_tui.trainer.config import ConfigError, RunConfig, to_toml
from lsml_tui.trainer.validate import check_runs_dir
from lsml_tui.tui import history
from lsml_tui.tui.flags import PROG, Parser, add_run_flags, config_from_args
from lsml_tui.tui.history import SUBCOMMANDS

# lsml-tui lr-find ..., lsml-tui sweep ...: each module's main(argv, prog, make)
TOOLS = {"lr-find": "lsml_tui.tui.tuning.lrfind", "sweep": "lsml_tui.tui.tuning.sweep",
         "run": "lsml_tui.tui.runner"}


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description="Watch a neural network train and see what it costs. "
                "Also: lsml-tui report RUN_DIR..., lsml-tui runs, lsml-tui open RUN_DIR, "
                "lsml-tui repair RUN_DIR, lsml-tui lr-find, lsml-tui sweep, lsml-tui run SCRIPT "
                "(each with --help).",
                argument_default=argparse.SUPPRESS)
    p.add_argument("--headless", action="store_true", help="train without the dashboard, "
                   "with a progress bar on stderr")
    p.add_argument("--json", action="store_true", help="with --headless: print a JSON summary "
                   "on stdout at the end")
    p.add_argument("--print-config", action="store_true", help="print the effective config as "
                   "TOML and exit")
    p.add_argument("--no-progress", action="store_true", help="with --headless: no progress bar")
    return add_run_flags(p)


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
            return module.main(argv[1:], f"{PROG} {argv[0]}", Parser)
        except ConfigError as e:
            print(f"{PROG}: error: {e}", file=sys.stderr)
            return 2
    if argv and argv[0] in SUBCOMMANDS:
        try:
            return history.main(argv, PROG, Parser)
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
            if cfg.workers > 1 and "WORLD_SIZE" not in os.environ:  # ranks to start here:
                from lsml_tui.trainer.parallel.launch import warm_ranks
                warm_ranks()            # their imports run beside this process's own
            from lsml_tui.trainer.headless import run_headless  # imports torch
            return run_headless(cfg, json_out="json" in args, progress="no_progress" not in args)
        if cfg.device != "cpu" and (cfg.device != "auto" or cfg.workers > 1
                                    or cfg.precision in ("tf32", "bf16")):
            # a GPU it lacks, more CUDA ranks than GPUs, more CPU ranks than cores: refused
            # now (imports torch)
            from lsml_tui.trainer.parallel.launch import preflight
            preflight(cfg)
        return run_dashboard(cfg)
    except ConfigError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
