"""A sweep worker killed outright (SIGKILL) cannot mark its trial failed: Optuna's heartbeat,
which lsml-tui adds to the journal storage, lets the next sweep fail it and run its point
again, instead of counting it RUNNING for ever."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time

import optuna
import psutil
from optuna.distributions import CategoricalDistribution

from conftest import alive, run_cli
from lsml_tui.trainer.store.reader import list_runs
from lsml_tui.trainer.tuning import space as SP
from lsml_tui.trainer.tuning import study as S
from lsml_tui.tui.tuning.sweep import grid_left
from test_sweep import SPACE, study_of, tiny

RUNNING, FAIL, WAITING = (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.FAIL,
                          optuna.trial.TrialState.WAITING)
HEARTBEAT = 1           # seconds: a trial silent for S.GRACE * 1 = 3 s counts as dead


def test_a_trial_whose_worker_was_killed_is_failed_and_queued_again_on_resume(tmp_path):
    runs = tmp_path / "runs"
    flags = [*tiny(steps=10**7), "--runs-dir", "runs", *SPACE,   # a trial that would not end
             "--heartbeat", str(HEARTBEAT), "--format", "json"]
    proc = subprocess.Popen([sys.executable, "-m", "lsml_tui.tui.cli", "sweep", *flags,
                             "--trials", "1"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120           # a bound on waiting, not an assertion
        while time.monotonic() < deadline and proc.poll() is None and not beating(runs):
            time.sleep(0.2)
        assert beating(runs)                        # the trial trains and records heartbeats
        children = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGKILL)            # --jobs 1: the sweep process trains it
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    killed, = study_of(runs).trials
    assert killed.state == RUNNING                  # nobody said otherwise: the old bug's state
    time.sleep(S.GRACE * HEARTBEAT + 0.5)           # its last heartbeat is older than the grace

    # the sweep again with the same flags, no new trial: it fails the killed one ...
    again = run_cli("sweep", *flags, "--trials", "0", cwd=tmp_path)
    assert again.returncode == 1, again.stderr      # 1: no trial completed (none ran)
    assert ": 2 trials (1 failed, 1 waiting)" in again.stdout     # none counted running
    assert (f"trial 0: no heartbeat for {S.GRACE * HEARTBEAT} s (its process was killed?): "
            f"failed; its point runs again as trial 1") in again.stderr
    first, retry = study_of(runs).trials
    assert first.state == FAIL
    # ... and Optuna queued its point again, as the next trial any worker takes
    assert retry.state == WAITING and retry.params == first.params
    assert retry.system_attrs["retry_history"] == [0]
    assert S.describe(first, "val_loss").startswith("trial 0 failed: its process stopped")
    assert S.describe(retry, "val_loss").startswith("trial 1 (trial 0 again) waiting")
    taken = study_of(runs).ask()
    assert taken.number == 1 and taken.params == first.params
    assert [r.status for r in list_runs(runs)] == ["killed"]   # the run store says so too
    assert not alive(children)


def beating(runs) -> bool:
    """The sweep's one trial trains its run and has recorded a heartbeat."""
    with contextlib.suppress(Exception):            # the journal is not written yet
        return ([r.status for r in list_runs(runs)] == ["running"]
                and S.BEAT in study_of(runs).trials[0].system_attrs)
    return False


def test_a_grid_point_whose_trial_was_killed_is_still_left_to_run():
    """Its failed trial does not count as the point done: the retry queued for it runs it."""
    optimizer = SP.parse_param("optimizer=sgd,momentum")
    study = optuna.create_study()
    study.add_trial(optuna.create_trial(
        state=FAIL, params={"optimizer": "sgd"}, system_attrs={S.BEAT: 0.0},
        distributions={"optimizer": CategoricalDistribution(["sgd", "momentum"])}))
    S.retry_stale()(study, study.trials[0])         # what fail_stale_trials calls
    requeue, left = grid_left(study, [optimizer])
    assert left == 2                                # sgd (its retry waits) and momentum
    assert requeue == []                            # the retry is queued already


def test_a_journal_lock_left_by_a_killed_worker_is_broken_after_optunas_grace(tmp_path,
                                                                            monkeypatch):
    """A worker killed while it writes the journal (a heartbeat a second) leaves Optuna's
    lock behind: a symlink to the journal. With the relative path --runs-dir runs gives,
    the link dangled, Optuna's grace period never saw it age, and the next sweep spun on it
    for ever. Here the killed worker is Optuna's own lock taken and never released, and the
    grace is shortened from Optuna's 30 s to 1 s."""
    import threading

    from optuna.storages.journal import JournalFileSymlinkLock
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(JournalFileSymlinkLock.__init__, "__defaults__", (1,))
    journal = "runs/sweeps/lr.journal"              # relative, as the sweep is given it
    (tmp_path / "runs" / "sweeps").mkdir(parents=True)
    store = S.storage(journal, HEARTBEAT)
    JournalFileSymlinkLock(S.journal_path(journal)).acquire()      # the killed worker's
    written = threading.Event()

    def write() -> None:
        optuna.create_study(study_name="after", storage=store)
        written.set()
    threading.Thread(target=write, daemon=True).start()
    assert written.wait(30), "the lock left behind was never broken"
