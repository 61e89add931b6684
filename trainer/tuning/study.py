"""An Optuna study for a sweep: what a sweep is (``Sweep``), its journal storage, sampler
and pruner, and one line per trial. No torch here.

The study lives in an Optuna journal file beside the runs
(``runs/sweep-<study>/journal.log``): several processes share it through its file lock
(Optuna advises against SQLite for parallel optimization), a sweep started again with
the same flags continues it, and ``optuna.load_study`` reads it.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass

import optuna

from lsml_tui.trainer.tuning.space import Param, show

SAMPLERS = ("tpe", "random", "grid")
METRICS = ("val_loss", "min_val_loss")  # minimized: the last validation loss, or the lowest


@dataclass(frozen=True)
class Sweep:
    """Everything a sweep process needs (picklable: it goes to the spawned workers)."""
    base: dict                  # run-config values from the flags and --config, no defaults
    space: tuple[Param, ...]
    study: str
    storage: str                # the journal file
    sampler: str = "tpe"
    metric: str = "val_loss"
    prune: bool = True
    prune_startup: int = 5      # completed trials before the median pruner acts
    prune_warmup: int = 0       # steps of each trial before it can be pruned
    seed: int = 0


def storage(path: str | os.PathLike):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    return JournalStorage(JournalFileBackend(str(path)))


def sampler(sweep: Sweep, seed: int):
    if sweep.sampler == "grid":     # every process must shuffle the grid alike: grid ids index it
        return optuna.samplers.GridSampler({p.name: list(p.choices) for p in sweep.space}, seed=0)
    if sweep.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    with warnings.catch_warnings():     # experimental before Optuna 5, its default since
        warnings.simplefilter("ignore")
        # several workers: a running trial counts as a bad one, so they spread out
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def pruner(sweep: Sweep):
    if not sweep.prune:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=sweep.prune_startup,
                                       n_warmup_steps=sweep.prune_warmup)


def load(sweep: Sweep, seed: int = 0):
    return optuna.load_study(study_name=sweep.study, storage=storage(sweep.storage),
                             sampler=sampler(sweep, seed), pruner=pruner(sweep))


def process_seed(sweep: Sweep, done: int, index: int) -> int:
    """Reproducible for a new sweep, different for each worker and for a resumed sweep
    (the same seed would draw the first trials' points again)."""
    import numpy as np
    return int(np.random.SeedSequence([sweep.seed, done, index]).generate_state(1)[0])


def describe(trial, metric: str) -> str:
    """One line per trial: its number, how it ended, its point, its score and its run."""
    point = " ".join(f"{k}={show(v)}" for k, v in trial.params.items())
    attrs = trial.user_attrs
    state = trial.state.name.lower()
    if state == "complete":
        state = attrs.get("status", "finished")
        if trial.value is not None and math.isfinite(trial.value):
            state += f", {metric} {trial.value:.4g}"
    elif state == "pruned":
        state += f" after step {attrs.get('steps', '?')}"
    elif state == "fail":
        state = f"failed: {attrs.get('error', 'see its run')}"
    run = f"; run {attrs['run_dir']}" if "run_dir" in attrs else ""
    return f"trial {trial.number} {state}: {point}{run}"
