"""The run flags every command that trains shares (``lsml-tui``, ``lr-find``, ``sweep``):
one flag per run-config field plus ``--config``, and the parser that refuses bad input
in one line with exit status 2. No torch here."""

from __future__ import annotations

import argparse
import sys

from lsml_tui.trainer.config import FIELDS, RunConfig, flag, load_toml, parse_value
from lsml_tui.trainer.validate import resolve

PROG = "lsml-tui"


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse would print the usage too)
        print(f"{PROG}: error: {message} (see {PROG} --help)", file=sys.stderr)
        sys.exit(2)


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
