"""Hyperparameter sweeps on Optuna: the objective, the trials' runs, the worker processes.

A trial is an ordinary run in the run store (``runs/<id>-t<trial>/``), trained in this
process or in one of ``--jobs`` spawned workers, all on one study (study.py). The space
and its checks are space.py. No torch here until a trial trains.
"""

from __future__ import annotations

import math
import os
import signal
import sys
from pathlib import Path

import optuna

from lsml_tui.trainer.config import ConfigError, RunConfig
from lsml_tui.trainer.tuning.space import trial_config
from lsml_tui.trainer.tuning.study import (GRACE, Sweep, describe, load, process_seed,
                                          storage)
from lsml_tui.trainer.worker import on_parent_exit

# -- running trials ---------------------------------------------------------


class Interrupt:
    """SIGINT or SIGTERM in a sweep process: a run in training stops between two steps (the
    trainer records it as interrupted, the trial fails); between trials, none starts."""
    requested = False
    training = False

    @classmethod
    def on_signal(cls, signum, frame) -> None:
        first = not cls.requested
        cls.requested = True
        if first and cls.training:
            raise KeyboardInterrupt

    @classmethod
    def install(cls) -> dict:
        cls.requested = cls.training = False
        return {s: signal.signal(s, cls.on_signal) for s in (signal.SIGINT, signal.SIGTERM)}


def run(sweep: Sweep, trials: int, jobs: int = 1, threads: int | None = None) -> None:
    """Run `trials` more trials of the (existing) study on `jobs` processes, each with
    `threads` torch threads; raise KeyboardInterrupt if a signal stopped them."""
    shares = [trials // jobs + (i < trials % jobs) for i in range(jobs)]
    if jobs == 1:
        previous = Interrupt.install()
        try:
            optimize(sweep, trials, 0, threads)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return
    import multiprocessing as mp
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=worker, args=(sweep, share, i, threads), name=f"sweep-{i}")
             for i, share in enumerate(shares) if share]
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.join()
    except KeyboardInterrupt:           # Ctrl-C reached the workers too; SIGTERM did not
        for p in procs:
            if p.is_alive():
                p.terminate()           # SIGTERM: the run in training stops, recorded
        raise
    finally:
        _reap(procs)
        signal.signal(signal.SIGTERM, previous)
    failed = [p for p in procs if p.exitcode]
    if any(p.exitcode == 130 for p in failed):
        raise KeyboardInterrupt
    if failed:
        raise WorkerFailed(f"sweep worker {failed[0].name} ended with status "
                           f"{failed[0].exitcode}; its trial is failed and run again once it "
                           f"has had no heartbeat for {GRACE * sweep.heartbeat} s, when "
                           f"another trial starts (continue the sweep with the same flags)")


class WorkerFailed(RuntimeError):
    """A worker process died (killed, out of memory): the other trials are recorded."""


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _reap(procs) -> None:
    """However the sweep ended, no worker outlives it: each gets 30 s to record its run,
    then is killed (at once on a second Ctrl-C)."""
    try:
        for p in procs:
            p.join(timeout=30)
    except KeyboardInterrupt:
        pass
    for p in procs:
        if p.is_alive():
            p.kill()
        p.join()


def worker(sweep: Sweep, trials: int, index: int, threads: int | None) -> None:
    """A spawned sweep process: its share of the trials; exit status 130 if interrupted."""
    Interrupt.install()
    # the sweep process died (SIGKILL): stop as if told to (the run recorded, interrupted)
    on_parent_exit(lambda: os.kill(os.getpid(), signal.SIGTERM), interval=1.0)
    try:
        optimize(sweep, trials, index, threads)
    except KeyboardInterrupt:
        sys.exit(130)


def optimize(sweep: Sweep, trials: int, index: int, threads: int | None) -> None:
    """This process's share of the trials, on the shared study."""
    if threads is not None:
        import torch
        torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # each trial says its own line
    done = len(optuna.load_study(study_name=sweep.study, storage=storage(sweep.storage)).trials)
    study = load(sweep, process_seed(sweep, done, index))

    def after(study, trial) -> None:
        print(describe(trial, sweep.metric), file=sys.stderr, flush=True)
        if Interrupt.requested:
            study.stop()
    study.optimize(lambda trial: objective(sweep, trial), n_trials=trials,
                   catch=(TrialFailed,), callbacks=[after], gc_after_trial=False)


class TrialFailed(Exception):
    """A trial whose run failed or whose point makes a bad config: the sweep goes on."""


class PruneWatch:
    """A trial's event sink: each validation loss goes to the trial and, when the median
    pruner says so, the trainer is told to stop (a command, applied before the next step)."""

    def __init__(self, trial, steps: int, prune: bool):
        self.trial, self.steps, self.prune = trial, steps, prune
        self.trainer = None
        self.val_losses: list[float] = []
        self.pruned = False

    def __call__(self, batch: tuple) -> None:
        from lsml_tui.trainer.commands import Stop
        from lsml_tui.trainer.events import ValMetrics
        for event in batch:
            if not isinstance(event, ValMetrics) or self.pruned:
                continue
            self.val_losses.append(event.val_loss)
            self.trial.report(event.val_loss, event.step)
            last = event.step + 1 >= self.steps         # the run is over: nothing to save
            if self.prune and not last and self.trial.should_prune():
                self.pruned = True
                self.trainer.submit(Stop())


def objective(sweep: Sweep, trial) -> float:
    """Train one point of the space as an ordinary stored run; return its score (inf for a
    run that diverged: the worst, so the sampler learns to keep away)."""
    point = {p.name: p.suggest(trial) for p in sweep.space}
    if Interrupt.requested:             # a signal between two trials: this one never starts
        trial.set_user_attr("status", "interrupted")
        raise KeyboardInterrupt
    try:
        cfg = trial_config(sweep.base, point)   # a range's inside can still be refused
    except ConfigError as e:
        trial.set_user_attr("error", str(e))
        raise TrialFailed(str(e)) from None
    status, summary, val_losses = train(sweep, trial, cfg)
    if status == "pruned":
        raise optuna.TrialPruned(f"pruned after step {summary['steps']}")
    if status == "interrupted":
        print(f"trial {trial.number} interrupted after step {summary['steps']}; run "
              f"{trial.user_attrs['run_dir']}", file=sys.stderr, flush=True)
        raise KeyboardInterrupt
    if status == "diverged":
        return math.inf
    if status != "finished":
        trial.set_user_attr("error", summary.get("error") or status)
        raise TrialFailed(summary.get("error") or status)
    finite = [v for v in val_losses if math.isfinite(v)]
    value = summary["final_val_loss"] if sweep.metric == "val_loss" else min(finite, default=None)
    return math.inf if value is None or not math.isfinite(value) else value


def train(sweep: Sweep, trial, cfg: RunConfig) -> tuple[str, dict, list[float]]:
    """The trial's run, stored like any headless run, with the study and trial in its
    summary; return its status (``pruned`` when the pruner stopped it), its summary and its
    validation losses. A signal before training starts records it as interrupted."""
    from lsml_tui.trainer.config import to_toml
    from lsml_tui.trainer.loop import Trainer
    from lsml_tui.trainer.store.writer import RunStore, new_run_id
    run_dir = Path(cfg.runs_dir) / f"{new_run_id(cfg.model)}-t{trial.number}"
    trial.set_user_attr("run_id", run_dir.name)
    trial.set_user_attr("run_dir", str(run_dir))
    where = {"study": sweep.study, "trial": trial.number, "storage": sweep.storage}
    store = RunStore.create(cfg.runs_dir, cfg.to_dict(), to_toml(cfg), run_dir=run_dir)
    watch = PruneWatch(trial, cfg.steps, sweep.prune)
    summary = {"status": "interrupted", "steps": 0, "sweep": where}
    try:
        try:
            # every event batch at once: the pruner sees a validation loss at its own step
            watch.trainer = Trainer(cfg, sink=watch, store=store, event_rate=math.inf)
        except Exception as e:
            summary = {**summary, "status": "failed", "error": f"{type(e).__name__}: {e}"}
        else:
            if not Interrupt.requested:     # (a signal while the model was being built)
                Interrupt.training = True
                try:
                    summary = {**watch.trainer.run(), "sweep": where}
                    if watch.trainer.error:     # what failed the run, in one line
                        summary["error"] = watch.trainer.error
                except KeyboardInterrupt:   # before the trainer's own handler was in place
                    pass
                finally:
                    Interrupt.training = False
        status = summary["status"]
        if watch.pruned and status == "interrupted":
            status = summary["status"] = "pruned"
        store.set_status(status, summary)
    finally:
        store.close()
    trial.set_user_attr("status", status)
    trial.set_user_attr("steps", summary["steps"])
    return status, summary, watch.val_losses
