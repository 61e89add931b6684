"""``lsml-tui sweep``: search run flags with Optuna; each trial is an ordinary stored run.

Bad input (an unknown field, an empty or reversed range, a value the run config
refuses, a study made with other flags) is refused before anything is written: one
line, exit status 2. The sweep ends with a table of the best trials, a comparison
report of their runs and a chart of the study, in ``runs/sweep-<study>/``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
from pathlib import Path

from lsml_tui.trainer.config import FIELDS, ConfigError, RunConfig, flag, suggest
from lsml_tui.trainer.tuning import space as SP
from lsml_tui.trainer.tuning.study import (GRACE, HEARTBEAT, METRICS, SAMPLERS, Sweep,
                                          fail_stale, storage)
from lsml_tui.trainer.tuning.sweep import WorkerFailed
from lsml_tui.trainer.tuning.sweep import run as run_trials
from lsml_tui.trainer.validate import check_runs_dir, resolve
from lsml_tui.tui.flags import add_run_flags, values_from_args
from lsml_tui.tui.report import DEFAULT_FORMATS as FORMATS  # a comparison's (tensorboard: per run)
from lsml_tui.tui.tuning.results import finish

JOURNAL = "journal.log"


def parser(prog: str, make) -> argparse.ArgumentParser:
    p = make(prog=prog, argument_default=argparse.SUPPRESS,
             description="Search run flags with Optuna. Each trial is an ordinary run in the "
             "runs dir (lsml-tui runs, open and report read it); the study is an Optuna "
             "journal in RUNS_DIR/sweep-STUDY/ that a second sweep with the same flags "
             "continues. Run flags set what every trial shares.")
    p.add_argument("--space", action="append", metavar="NAME=VALUES",
                   help=f"a searched run flag: {SP.SYNTAX}; repeat for more")
    p.add_argument("--space-file", metavar="TOML", help="the space as TOML: one key per "
                   "field, a string in --space's syntax or an array of values")
    p.add_argument("--trials", metavar="N", help="trials to run now (default 10; grid: "
                   "the grid points not yet run)")
    p.add_argument("--sampler", choices=SAMPLERS, help="tpe (default), random, or grid "
                   "(every combination of explicit values)")
    p.add_argument("--study", metavar="NAME", help="the study's name (default: the model, "
                   "the searched fields and a hash of the flags); an existing one continues")
    p.add_argument("--jobs", metavar="N", help="trials trained at once, each in its own "
                   "process (default 1; at most the cores)")
    p.add_argument("--metric", choices=METRICS, help="what a trial minimizes: the last "
                   "validation loss (default) or the lowest")
    p.add_argument("--pruner", choices=("median", "none"), help="stop a trial whose "
                   "validation loss is worse than the median of earlier trials' at the same "
                   "step (default median)")
    p.add_argument("--prune-startup", metavar="N", help="completed trials before pruning "
                   "starts (default 5)")
    p.add_argument("--prune-warmup", metavar="STEPS", help="steps of a trial before it can "
                   "be pruned (default 0)")
    p.add_argument("--top", metavar="K", help="trials in the table and the report (default 5)")
    p.add_argument("--format", metavar="FORMATS", help="the report's formats, comma-separated: "
                   f"{', '.join(FORMATS)} (default all), or none")
    p.add_argument("--json", action="store_true", help="print the study's trials as JSON")
    p.add_argument("--heartbeat", metavar="SECONDS", help=f"a running trial records that it "
                   f"is alive this often (default {HEARTBEAT}); one silent for {GRACE} times "
                   f"as long (its worker was killed) is failed and its point run again")
    return add_run_flags(p)


def _count(name: str, text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"--{name} {text!r} is not an integer") from None
    if value < least:
        raise ConfigError(f"--{name} {value} is out of range: must be an integer >= {least}")
    return value


def base_values(args: argparse.Namespace) -> tuple[dict, set]:
    """The run flags as config values (--config below flags), no defaults filled; and the
    names given as flags. Unresolved, so each trial's optimizer brings its own defaults."""
    return values_from_args(args), {name for name in FIELDS if name in args}


def space(args: argparse.Namespace, given: set, base: dict) -> list[SP.Param]:
    params = [SP.parse_param(text) for text in getattr(args, "space", [])]
    if "space_file" in args:
        params += SP.params_from_toml(args.space_file)
    if not params:
        return [default_space(base, given)]
    seen = set()
    for p in params:
        if p.name in seen:
            raise ConfigError(f"--space {p.name} is given twice")
        if p.name in given:
            raise ConfigError(f"{flag(p.name)} is a run flag and searched in --space; drop one")
        seen.add(p.name)
    return params


def default_space(base: dict, given: set) -> SP.Param:
    """No --space: the learning rate, on a log range of a decade either side of the
    optimizer's default (what lr-find searches too), said on stderr."""
    if "lr" in given:
        raise ConfigError(f"no --space, and --lr is a run flag: give --space {SP.SYNTAX} "
                          f"(with no --space the sweep searches the lr)")
    cfg = resolve(RunConfig(**{**base, "lr": None}))
    lo, hi = cfg.lr / 10, cfg.lr * 10
    param = SP.parse_param(f"lr={lo:.3g}..{hi:.3g}:log")
    print(f"no --space: searching {param} (a decade either side of {cfg.optimizer}'s default "
          f"lr {cfg.lr:g}); give --space {SP.SYNTAX} for another", file=sys.stderr)
    return param


def report_formats(text: str) -> list[str]:
    names = [f.strip() for f in text.split(",") if f.strip()]
    if names == ["none"]:
        return []
    for name in names or [""]:
        if name not in FORMATS:
            raise ConfigError(f"--format {name!r} is not one of: {', '.join(FORMATS)}, none"
                              f"{suggest(name, FORMATS)}")
    return list(dict.fromkeys(names))


def identity(base: dict, params: list[SP.Param], metric: str) -> dict:
    """What makes two sweeps one study: the shared flags, the space and the metric."""
    shared = {k: v for k, v in sorted(base.items()) if k != "runs_dir"}
    return {"config": json.dumps(shared, sort_keys=True), "space": [str(p) for p in params],
            "metric": metric}


def default_name(base: dict, params: list[SP.Param], ident: dict) -> str:
    """'mlp-lr-optimizer-3fa2c1': the same flags give the same study, so it continues."""
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:6]
    searched = [p.name for p in params]
    model = "models" if "model" in searched else base.get("model", RunConfig.model)
    return "-".join([model, *searched[:4], digest]).replace("_", "-")


def existing(path: Path, name: str, ident: dict, heartbeat: int = HEARTBEAT):
    """The study already in `path`, checked to be this one; None when there is none."""
    if not path.is_file():
        return None
    import optuna
    try:
        study = optuna.load_study(study_name=name, storage=storage(path, heartbeat))
    except KeyError:
        return None
    for key, value in ident.items():
        was = study.user_attrs.get(key)
        if was == value:
            continue
        if key == "config" and was is not None:     # name the flags that differ
            old, new = json.loads(was), json.loads(value)
            was = ", ".join(f"{flag(k)} {old.get(k, '(unset)')} now {new.get(k, '(unset)')}"
                            for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k))
        elif key == "space" and was is not None:
            was = " ".join(was)
        raise ConfigError(f"study {name!r} in {path} was made with another {key} ({was}); "
                          f"repeat its flags to continue it, or pass another --study NAME")
    return study


def main(argv: list[str], prog: str, make) -> int:
    args = parser(prog, make).parse_args(argv)
    base, given = base_values(args)
    params = space(args, given, base)
    first = SP.check_space(base, params)
    kind = getattr(args, "sampler", "tpe")
    if kind == "grid" and any(not p.choices for p in params):
        bad = next(p for p in params if not p.choices)
        raise ConfigError(f"--sampler grid needs explicit values, not the range {bad}; e.g. "
                          f"{bad.name}={bad.low!r},{bad.high!r}")
    if first.workers != 1:
        raise ConfigError(f"--workers {first.workers}: a trial trains in one process; use "
                          f"--jobs N to train N trials at once")
    metric = getattr(args, "metric", "val_loss")
    ident = identity(base, params, metric)
    name = getattr(args, "study", None) or default_name(base, params, ident)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", name):
        raise ConfigError(f"--study {name!r} is not a name; allowed: letters, digits, '.', "
                          f"'_' and '-', starting with a letter or digit")
    check_runs_dir(first.runs_dir)
    sweep = Sweep(base=base, space=tuple(params), study=name,
                    storage=str(Path(first.runs_dir) / f"sweep-{name}" / JOURNAL), sampler=kind,
                    metric=metric, prune=getattr(args, "pruner", "median") == "median",
                    prune_startup=_count("prune-startup", getattr(args, "prune_startup", "5"), 0),
                    prune_warmup=_count("prune-warmup", getattr(args, "prune_warmup", "0"), 0),
                    seed=first.seed,
                    heartbeat=_count("heartbeat", getattr(args, "heartbeat", str(HEARTBEAT)), 1))
    top = _count("top", getattr(args, "top", "5"), 1)
    study = existing(Path(sweep.storage), name, ident, sweep.heartbeat)
    requeue, left = grid_left(study, params) if kind == "grid" else ([], None)
    trials = _count("trials", args.trials, 0) if "trials" in args else (
        10 if left is None else left)
    if left is not None and trials > left:
        raise ConfigError(f"--trials {trials}: the grid has {left} of "
                          f"{len(SP.grid_points(params))} points left to run")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    jobs = _count("jobs", getattr(args, "jobs", "1"), 1)
    if jobs > cores:
        print(f"{prog}: --jobs {jobs} is more than the {cores} cores here: running {cores}",
              file=sys.stderr)
    jobs = max(1, min(jobs, cores, trials))
    formats = report_formats(getattr(args, "format", ",".join(FORMATS)))
    if first.device != "cpu" and (first.device != "auto" or first.precision in ("tf32", "bf16")):
        from lsml_tui.trainer.parallel.launch import preflight  # the device exists (imports torch)
        preflight(first)

    # -- nothing was written before this line --
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)     # each trial says its own line
    for line in fail_stale(study, sweep.heartbeat) if study is not None else []:
        print(line, file=sys.stderr)        # a trial whose worker was killed outright
    study = study or create(sweep, ident)
    for point in requeue:                # grid points whose trial a signal cut short
        study.enqueue_trial(point)
    print(f"sweep {name}: {trials} trial{'s' * (trials != 1)} ({kind}, {jobs} "
          f"process{'es' * (jobs > 1)}); study in {sweep.storage}", file=sys.stderr, flush=True)
    interrupted = False
    try:
        run_trials(sweep, trials, jobs, threads=max(1, cores // jobs) if jobs > 1 else None)
    except KeyboardInterrupt:
        interrupted = True
    except WorkerFailed as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return max(1, finish(sweep, top, formats, "json" in args, False))
    return finish(sweep, top, formats, "json" in args, interrupted)


def create(sweep: Sweep, ident: dict):
    import optuna
    Path(sweep.storage).parent.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(study_name=sweep.study,
                                storage=storage(sweep.storage, sweep.heartbeat),
                                direction="minimize", load_if_exists=True)
    for key, value in {**ident, "created_by": "lsml-tui sweep"}.items():
        study.set_user_attr(key, value)
    return study


def grid_left(study, params: list[SP.Param]) -> tuple[list[dict], int]:
    """Grid points to enqueue again (their trial was interrupted) and points left to run."""
    names = [p.name for p in params]
    trials = study.trials if study is not None else []
    key = lambda t: tuple(t.params.get(n) for n in names)  # noqa: E731
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    done = {key(t) for t in trials if t.state.is_finished() and t.number not in retried
            and t.user_attrs.get("status") != "interrupted"}
    waiting = {key(t) for t in trials if t.state.name == "WAITING"}
    cut = {key(t) for t in trials if t.user_attrs.get("status") == "interrupted"}
    requeue = [dict(zip(names, point)) for point in cut - done - waiting]
    left = sum(1 for point in SP.grid_points(params) if point not in done)
    return requeue, left
