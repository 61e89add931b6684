"""An Optuna study for a sweep: what a sweep is (``Sweep``), its journal storage, sampler
and pruner, and one line per trial. No torch here.

The study lives in an Optuna journal file beside the runs
(``runs/sweep-<study>/journal.log``): several processes share it through its file lock
(Optuna advises against SQLite for parallel optimization), a sweep started again with
the same flags continues it, and ``optuna.load_study`` reads it.

A worker killed outright (SIGKILL, the OOM killer) cannot mark its trial failed, and the
journal would keep it RUNNING for ever. Optuna's remedy is the heartbeat: each running
trial's worker records the time every few seconds, and ``optuna.storages.fail_stale_trials``
(which Optuna runs before each new trial) fails a trial whose last heartbeat is older than
a grace period, handing it to a callback that queues its point again. Optuna implements
it for its RDB storage only (5.1: ``JournalStorage`` is not a ``BaseHeartbeat``, so
``fail_stale_trials`` passes it by; optuna/optuna#6615), so ``HeartbeatJournal`` adds it
to the journal, the heartbeat kept in the trial's system attrs.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import dataclass

import optuna
from optuna.storages import JournalStorage
from optuna.storages._heartbeat import BaseHeartbeat

from lsml_tui.trainer.tuning.space import Param, show

SAMPLERS = ("tpe", "random", "grid")
METRICS = ("val_loss", "min_val_loss")  # minimized: the last validation loss, or the lowest
HEARTBEAT = 10      # seconds between a running trial's heartbeats (--heartbeat)
GRACE = 3           # heartbeats missed before a trial counts as dead: 3 x 10 = 30 s
BEAT = "lsml_tui:heartbeat"     # the system attr that holds the last one (time.time())


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
    heartbeat: int = HEARTBEAT  # seconds between a running trial's heartbeats


class HeartbeatJournal(JournalStorage, BaseHeartbeat):
    """Optuna's journal storage with Optuna's heartbeat: a trial RUNNING with no heartbeat
    for GRACE heartbeats is failed by ``fail_stale_trials`` and its point queued again
    (``RetryHeartbeatStaleTrialCallback``, once)."""

    def __init__(self, backend, interval: int = HEARTBEAT):
        super().__init__(backend)
        self.interval, self.retry = interval, retry_stale()

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self.set_trial_system_attr(trial_id, BEAT, time.time())
        except optuna.exceptions.UpdateFinishedTrialError:
            pass        # failed as stale by another process meanwhile: nothing to keep alive

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        oldest = time.time() - GRACE * self.interval
        return [t._trial_id for t in self.get_all_trials(
                    study_id, deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
                if t.system_attrs.get(BEAT, math.inf) < oldest]

    def get_heartbeat_interval(self) -> int:
        return self.interval

    def get_heartbeat_stale_trial_callback(self):
        return self.retry

    get_failed_trial_callback = get_heartbeat_stale_trial_callback  # its name before 4.9


def retry_stale():
    """Optuna's callback that queues a stale trial's point again as a WAITING trial; once:
    a point that kills its worker twice is left failed."""
    retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
    with warnings.catch_warnings():     # experimental (Optuna 5), or renamed since 4.9
        warnings.simplefilter("ignore")
        return (retry or optuna.storages.RetryFailedTrialCallback)(max_retry=1)


def journal_path(path: str | os.PathLike) -> str:
    """The journal's absolute path, as the storage opens it. Optuna's lock is a symlink to
    the path it is given, and a relative target resolves from the link's own folder: the
    link dangles, and a lock left by a worker killed while writing (a heartbeat a second)
    could never be broken after Optuna's grace period (it reads the target's mtime); the
    next sweep would spin on it for ever."""
    return os.path.abspath(path)


def storage(path: str | os.PathLike, heartbeat: int = HEARTBEAT):
    from optuna.storages.journal import JournalFileBackend
    return HeartbeatJournal(JournalFileBackend(journal_path(path)), heartbeat)


def fail_stale(study, heartbeat: int = HEARTBEAT) -> list[str]:
    """Fail the trials whose worker stopped beating (Optuna's ``fail_stale_trials``, which
    queues each one's point again); one line for each."""
    running = {t.number for t in study.get_trials(deepcopy=False) if t.state.name == "RUNNING"}
    with warnings.catch_warnings():         # experimental
        warnings.simplefilter("ignore")
        optuna.storages.fail_stale_trials(study)
    trials = study.get_trials(deepcopy=False)
    again = {t.system_attrs["retry_history"][-1]: t.number for t in trials
             if t.system_attrs.get("retry_history")}
    grace = GRACE * heartbeat
    return [f"trial {t.number}: no heartbeat for {grace} s (its process was killed?): failed"
            + (f"; its point runs again as trial {again[t.number]}" if t.number in again else "")
            for t in trials if t.number in running and t.state.name == "FAIL"]


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
    return optuna.load_study(study_name=sweep.study,
                             storage=storage(sweep.storage, sweep.heartbeat),
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
        silent = BEAT in trial.system_attrs and "status" not in attrs   # killed while training
        state = f"failed: {attrs.get('error', 'its process stopped' if silent else 'see its run')}"
    retry = trial.system_attrs.get("retry_history")
    again = f" (trial {retry[-1]} again)" if retry else ""
    run = f"; run {attrs['run_dir']}" if "run_dir" in attrs else ""
    return f"trial {trial.number}{again} {state}: {point}{run}"
