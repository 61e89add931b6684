"""A sweep's search space: ``--space NAME=LO..HI[:log]`` or ``NAME=A,B,C`` (or the same in a
TOML file) over run-config fields, each value parsed and every corner of the space resolved
with the run config's own parser and validation before anything starts. No optuna or torch
here: a ``Param`` only asks the trial it is given for a value."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import tomllib

from lsml_tui.trainer.config import FIELDS, ConfigError, RunConfig, flag, parse_value, suggest
from lsml_tui.trainer.validate import resolve

NUMERIC = ("int", "float", "clip")      # field kinds a range can cover
NOT_SEARCHED = {"runs_dir": "a sweep's runs stay in one runs dir",
                "workers": "a trial trains in one process; --jobs N runs N trials at once"}
MAX_CORNERS = 4096      # combinations of space corners checked with resolve before starting
SYNTAX = ("NAME=LO..HI, NAME=LO..HI:log or NAME=A,B,C "
          "(e.g. lr=1e-4..1e-1:log, optimizer=sgd,adam)")


@dataclass(frozen=True)
class Param:
    """One searched run-config field: explicit values, or a range (log-scaled on request)."""
    name: str
    choices: tuple = ()
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False

    def suggest(self, trial):
        if self.choices:
            return trial.suggest_categorical(self.name, list(self.choices))
        if FIELDS[self.name].metadata["kind"] == "int":
            return trial.suggest_int(self.name, self.low, self.high, log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, log=self.log)

    def corners(self) -> tuple:
        """The values that bound what a trial can draw: every choice, or both ends."""
        return self.choices or (self.low, self.high)

    def __str__(self) -> str:
        if self.choices:
            return f"{self.name}={','.join(_exact(v) for v in self.choices)}"
        return f"{self.name}={self.low!r}..{self.high!r}{':log' if self.log else ''}"


def _exact(value) -> str:
    """A value as the space's syntax writes it (floats in full, for the study's identity)."""
    if value is None:
        return "off"
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if isinstance(value, float) else str(value)


def show(value) -> str:
    """A value as a person reads it: 4 significant digits, 'off' for no clipping."""
    return f"{value:.4g}" if isinstance(value, float) else _exact(value)


def parse_param(text: str) -> Param:
    """``--space NAME=...`` into a Param, or ConfigError naming the bad part."""
    name, sep, values = (part.strip() for part in text.partition("="))
    if not (sep and name and values):
        raise ConfigError(f"--space {text!r} is not a search space; allowed: {SYNTAX}")
    return make_param(name, values, f"--space {text!r}")


def params_from_toml(path: str) -> list[Param]:
    """A space file: one key per field, a string in --space's syntax or an array of values."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8", errors="replace"))
    except OSError as e:
        raise ConfigError(f"cannot read --space-file {path!r}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: malformed TOML: {str(e).split(' (at line')[0]}") from None
    data = data.get("space", data)          # a [space] table, or keys at the top
    if not data:
        raise ConfigError(f"{path}: no parameters; expected keys such as "
                          f"lr = \"1e-4..1e-1:log\" or optimizer = [\"sgd\", \"adam\"]")
    out = []
    for name, value in data.items():
        where = f"{path}: key {name!r}"
        if isinstance(value, list):
            value = [_exact(v) for v in value]
        elif not isinstance(value, str):
            raise ConfigError(f"{where} must be a string ({SYNTAX}) or an array of values, "
                              f"got {type(value).__name__} {value!r}")
        out.append(make_param(name, value, where))
    return out


def make_param(name: str, values: str | list[str], where: str) -> Param:
    name = name.replace("-", "_")
    if name not in FIELDS:
        raise ConfigError(f"{where}: unknown parameter {name!r}{suggest(name, FIELDS)} "
                          f"(allowed: run config fields: {', '.join(FIELDS)})")
    if name in NOT_SEARCHED:
        raise ConfigError(f"{where}: {name} cannot be searched ({NOT_SEARCHED[name]})")
    kind = FIELDS[name].metadata["kind"]
    if isinstance(values, str) and ".." in values:
        return _range(name, kind, values, where)
    items = values.split(",") if isinstance(values, str) else values
    items = [item.strip() for item in items]
    if any(not item for item in items):
        raise ConfigError(f"{where}: an empty value in the list; allowed: {SYNTAX}")
    try:
        choices = tuple(parse_value(name, item) for item in items)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    if len(choices) < 2:
        raise ConfigError(f"{where}: one value is not a search; give two or more, or pass "
                          f"{flag(name)} {items[0] if items else '...'}")
    if len(set(choices)) < len(choices):
        raise ConfigError(f"{where}: a value is listed twice")
    return Param(name, choices)


def _range(name: str, kind: str, text: str, where: str) -> Param:
    if kind not in NUMERIC:
        raise ConfigError(f"{where}: {name} takes a list of values, not a range "
                          f"(e.g. {name}=A,B)")
    body, _, modifier = text.partition(":")
    lo_text, _, hi_text = (part.strip() for part in body.partition(".."))
    number = int if kind == "int" else float
    try:
        lo, hi = number(lo_text), number(hi_text)
    except ValueError:
        what = "integers" if kind == "int" else "numbers"
        raise ConfigError(f"{where}: the ends of a {name} range must be {what}; allowed: "
                          f"{SYNTAX}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ConfigError(f"{where}: a range needs finite ends")
    if modifier.strip() not in ("", "log"):
        raise ConfigError(f"{where}: unknown modifier {modifier!r}; allowed: log")
    if lo >= hi:
        raise ConfigError(f"{where}: a range needs LO < HI, got {lo!r}..{hi!r}")
    if modifier.strip() == "log" and lo <= 0:
        raise ConfigError(f"{where}: a log range needs LO > 0, got {lo!r}")
    return Param(name, low=lo, high=hi, log=modifier.strip() == "log")


def trial_config(base: dict, point: dict) -> RunConfig:
    """The run config of one point of the space: the base flags, the point's values over
    them, then every default filled (an optimizer's own lr for each optimizer)."""
    return resolve(RunConfig(**{**base, **point}))


def check_space(base: dict, params: list[Param]) -> RunConfig:
    """Resolve every corner of the space over `base` (every combination of the choices and
    the ranges' ends; past MAX_CORNERS, each value with the others at their first corner).
    Return the first point's config, or raise ConfigError naming the bad point."""
    corners = [p.corners() for p in params]
    if math.prod(len(c) for c in corners) <= MAX_CORNERS:
        points = itertools.product(*corners)
    else:
        firsts = [c[0] for c in corners]
        points = (firsts[:i] + [v] + firsts[i + 1:] for i, c in enumerate(corners) for v in c)
    first = None
    for values in points:
        point = {p.name: v for p, v in zip(params, values)}
        try:
            cfg = trial_config(base, point)
        except ConfigError as e:
            try:
                resolve(RunConfig(**base))
            except ConfigError as b:
                if str(b) == str(e):        # the flags are wrong whatever the space says
                    raise e from None
            where = " ".join(f"{k}={show(v)}" for k, v in point.items())
            raise ConfigError(f"{'--space' if len(params) == 1 else 'the space point'} {where} "
                              f"makes a bad run config: {e}") from None
        first = first or cfg
    return first


def grid_points(params: list[Param]) -> list[tuple]:
    return list(itertools.product(*(p.choices for p in params)))
