"""lsml-tui sweep: Optuna trials that are ordinary stored runs, a study Optuna reads back."""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import psutil
import pytest

from conftest import alive, run_cli
from lsml_tui.trainer.tuning import study as S
from lsml_tui.trainer.tuning import sweep as SW
from lsml_tui.trainer import specs
from lsml_tui.trainer.tuning import space as SP
from lsml_tui.trainer.store.schema import DB_NAME
from lsml_tui.trainer.store.reader import list_runs, open_run
from lsml_tui.tui import cli

# A least-squares problem small enough that a trial trains in a fraction of a second;
# full-batch gradient descent, so the validation loss is the training objective itself.
def tiny(steps: int = 20) -> list[str]:
    return ["--model", "linear", "--dim", "8", "--examples", "64", "--steps", str(steps),
            "--val-every", "5", "--clip", "off", "--no-profile", "--device", "cpu"]


TINY = tiny()
SPACE = ["--space", "lr=0.01..1.0:log", "--space", "optimizer=sgd,momentum"]


def sweep(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The real CLI; its report as JSON only (the HTML's charts are the slow part), unless
    `args` ask for more."""
    fmt = [] if "--format" in args else ["--format", "json"]
    return run_cli("sweep", *TINY, "--runs-dir", "runs", *fmt, *args, cwd=cwd)


def study_of(runs: Path) -> optuna.Study:
    """The one study in `runs`, read with Optuna's own API (no lsml-tui code)."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    journal, = runs.glob("sweep-*/journal.log")
    name = journal.parent.name.removeprefix("sweep-")
    return optuna.load_study(study_name=name,
                             storage=JournalStorage(JournalFileBackend(str(journal))))


def run_pids(runs: Path) -> set[int]:
    """The process each run was trained in, as its store recorded it."""
    pids = set()
    for db in runs.glob(f"*/{DB_NAME}"):
        con = sqlite3.connect(db)
        pids.add(con.execute("SELECT pid FROM run").fetchone()[0])
        con.close()
    return pids


@pytest.fixture(scope="module")
def three(tmp_path_factory) -> tuple[Path, dict]:
    """One 3-trial sweep through the real CLI; its directory and its --json output."""
    cwd = tmp_path_factory.mktemp("sweep3")
    proc = sweep(*SPACE, "--trials", "3", "--json", "--format", "html,md,json,csv", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return cwd, json.loads(proc.stdout.strip().splitlines()[-1])


def test_three_trials_leave_three_runs_and_a_study_optuna_reads(three):
    cwd, out = three
    runs = list_runs(cwd / "runs")
    assert len(runs) == 3
    assert {r.status for r in runs} == {"finished"}  # 3 < 5 completed trials: no pruning yet
    study = study_of(cwd / "runs")
    assert len(study.trials) == 3
    assert {t.state for t in study.trials} == {optuna.trial.TrialState.COMPLETE}
    by_id = {r.id: r for r in runs}
    for trial in study.trials:                      # each trial's point is its run's config
        run = by_id[trial.user_attrs["run_id"]]
        assert run.config["lr"] == trial.params["lr"]
        assert run.config["optimizer"] == trial.params["optimizer"]
        assert run.config["steps"] == 20            # the shared flags reach every trial
        assert run.summary["sweep"]["trial"] == trial.number
        assert run.summary["sweep"]["study"] == study.study_name
        assert trial.value == run.summary["final_val_loss"]    # --metric val_loss
    values = {t.number: t.value for t in study.trials}
    assert out["best"] == sorted(values, key=values.get)       # best first


def test_the_best_runs_get_a_comparison_report_and_a_study_chart(three):
    cwd, out = three
    written = [cwd / p for p in out["written"]]
    assert {p.suffix for p in written} == {".html", ".md", ".json", ".csv", ".svg"}
    assert all(p.parent.name.startswith("sweep-") and p.is_file() for p in written)
    report = json.loads(next(p for p in written if p.suffix == ".json").read_text())
    assert len(report["runs"]) == 3                 # --top 5 of 3 trials: all of them
    chart = next(p for p in written if p.suffix == ".svg")
    assert chart.name == "parallel-coordinates.svg" and "<svg" in chart.read_text()
    listed = run_cli("runs", "--runs-dir", "runs", cwd=cwd)
    assert listed.returncode == 0
    assert all(r.id in listed.stdout for r in list_runs(cwd / "runs"))     # trials are runs


def test_the_same_flags_continue_the_study(three, tmp_path):
    cwd, _ = three
    shutil.copytree(cwd / "runs", tmp_path / "runs")
    proc = sweep(*SPACE, "--trials", "2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    study = study_of(tmp_path / "runs")
    assert [t.number for t in study.trials] == [0, 1, 2, 3, 4]     # 3 before + 2 now
    assert len(list_runs(tmp_path / "runs")) == 3 + 2
    assert len(list((tmp_path / "runs").glob("sweep-*"))) == 1


def test_grid_sampler_covers_exactly_the_grid(tmp_path, capsys, monkeypatch):
    grid = ["--sampler", "grid", "--space", "lr=0.1,0.5", "--space", "optimizer=sgd,momentum"]
    proc = sweep(*grid, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    study = study_of(tmp_path / "runs")
    points = [(t.params["lr"], t.params["optimizer"]) for t in study.trials]
    assert len(points) == 2 * 2                     # --trials defaults to the grid's size
    assert set(points) == set(itertools.product([0.1, 0.5], ["sgd", "momentum"]))
    monkeypatch.chdir(tmp_path)                     # the same flags: --runs-dir runs too
    status, err = refused(["sweep", *TINY, "--runs-dir", "runs", *grid, "--trials", "1"], capsys)
    assert status == 2 and "the grid has 0 of 4 points left" in err


def refused(argv: list[str], capsys) -> tuple[int, str]:
    """The real entry point, in this process: its exit status and its stderr."""
    try:
        status = cli.main(argv)
    except SystemExit as e:                         # argparse's refusals
        status = e.code
    return status, capsys.readouterr().err


def test_with_no_space_the_sweep_searches_the_lr_a_decade_either_side_of_its_default(
        tmp_path):
    proc = sweep("--trials", "2", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    # the linear model trains with Adam by default: lr 3e-3 / 10 .. 3e-3 * 10
    default = specs.OPTIMIZERS["adam"].lr
    said = f"lr={default / 10:.3g}..{default * 10:.3g}:log"
    assert f"no --space: searching {said}" in proc.stderr
    trials = json.loads(proc.stdout.strip().splitlines()[-1])["trials"]
    assert len(trials) == 2 and all(set(t["params"]) == {"lr"} for t in trials)
    low, high = float(f"{default / 10:.3g}"), float(f"{default * 10:.3g}")
    assert all(low <= t["params"]["lr"] <= high for t in trials)


@pytest.mark.parametrize("space, says", [
    (["--space", "lrr=0.01,0.1"], "unknown parameter 'lrr'; did you mean 'lr'?"),
    (["--space", "lr=0.1..0.01"], "needs LO < HI"),
    (["--space", "lr=0.1..0.1"], "needs LO < HI"),
    (["--space", "lr=0..0.1:log"], "a log range needs LO > 0"),
    (["--space", "lr=0.001..0.1:lg"], "unknown modifier 'lg'; allowed: log"),
    (["--space", "optimizer=sgd,foo"], "--optimizer 'foo' is not one of"),
    (["--space", "optimizer=sgd..adam"], "optimizer takes a list of values, not a range"),
    (["--space", "batch_size=8.5..64"], "must be integers"),
    (["--space", "lr"], "is not a search space; allowed: NAME=LO..HI"),
    (["--space", "lr=0.1,,0.2"], "an empty value"),
    (["--space", "lr=0.1"], "one value is not a search"),
    (["--space", "lr=-1,0.1"], "--lr -1.0 is out of range"),
    (["--space", "runs_dir=a,b"], "runs_dir cannot be searched"),
    (["--lr", "0.1", "--space", "lr=0.01,0.1"], "--lr is a run flag and searched in --space"),
    (["--space", "optimizer=sgd,adam", "--space", "momentum=0.5..0.9"],
     "--momentum does not apply to"),
    (["--sampler", "grid", "--space", "lr=0.01..0.1"], "--sampler grid needs explicit values"),
    (["--space", "lr=0.01,0.1", "--trials", "x"], "--trials 'x' is not an integer"),
    (["--lr", "0.1"], "no --space, and --lr is a run flag"),
])
def test_bad_spaces_are_refused_in_one_line_before_anything_is_written(space, says, tmp_path,
                                                                       capsys):
    runs = tmp_path / "runs"
    status, err = refused(["sweep", *TINY, "--runs-dir", str(runs), *space], capsys)
    assert status == 2
    assert len(err.strip().splitlines()) == 1 and says in err, err
    assert not runs.exists()


def test_a_bad_space_file_is_refused(tmp_path, capsys):
    space = tmp_path / "space.toml"
    space.write_text('lr = "1e-4..1e-1:log"\noptimizer = ["sgd", "fooo"]\n')
    status, err = refused(["sweep", *TINY, "--runs-dir", str(tmp_path / "runs"),
                           "--space-file", str(space)], capsys)
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert "--optimizer 'fooo' is not one of" in err and not (tmp_path / "runs").exists()


def test_a_study_made_with_other_flags_is_not_continued(three, tmp_path, capsys):
    cwd, _ = three
    shutil.copytree(cwd / "runs", tmp_path / "runs")
    name = study_of(tmp_path / "runs").study_name
    before = sorted(p.name for p in (tmp_path / "runs").iterdir())
    status, err = refused(["sweep", *TINY, "--runs-dir", str(tmp_path / "runs"), "--study", name,
                           "--space", "lr=0.01..0.5:log", "--space", "optimizer=sgd,momentum"],
                          capsys)
    assert status == 2 and "was made with another space" in err
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == before


def test_the_median_pruner_stops_a_clearly_worse_trial(tmp_path):
    """Trial 0 takes gradient steps of 1/L, trial 1 of 1e-6/L, from the same start (same
    seed). By the descent lemma each 1/L step lowers f by |grad f|^2 / 2, so at the first
    validation trial 1's loss is above trial 0's, the median of one completed trial."""
    runs = tmp_path / "runs"
    base = {"model": "linear", "dim": 8, "examples": 64, "steps": 40, "val_every": 5,
            "clip": None, "profile": False, "device": "cpu", "optimizer": "sgd",
            "runs_dir": str(runs)}
    sweep_ = S.Sweep(base=base, space=(SP.Param("lr", low=1e-6, high=1.0, log=True),),
                     study="prune", storage=str(runs / "sweep-prune" / "journal.log"),
                     sampler="random", prune_startup=1)
    (runs / "sweep-prune").mkdir(parents=True)
    study = optuna.create_study(study_name="prune", storage=S.storage(sweep_.storage))
    study.enqueue_trial({"lr": 1.0})
    study.enqueue_trial({"lr": 1e-6})
    SW.run(sweep_, trials=2)
    first, second = S.load(sweep_).trials
    assert first.state == optuna.trial.TrialState.COMPLETE
    assert second.state == optuna.trial.TrialState.PRUNED
    assert list(second.intermediate_values) == [5 - 1]     # its first validation, after step 4
    assert second.intermediate_values[4] > first.intermediate_values[4]
    with open_run(runs / second.user_attrs["run_id"]) as r:
        info = r.info()
    assert info.status == "pruned" and info.summary["status"] == "pruned"
    assert info.ended is not None                   # a final status: the run is over
    assert info.steps == 5          # stopped before the step after its first validation
    with open_run(runs / first.user_attrs["run_id"]) as r:
        assert r.info().status == "finished" and r.info().steps == 40


def test_a_diverged_trial_scores_inf_and_its_run_says_diverged(tmp_path):
    """lr = 10 on f with L = 1: the error along the top eigenvector grows by |1 - 10| = 9
    a step (the loss by 81), so the loss stays above 10x its start for 2 steps in a row."""
    runs = tmp_path / "runs"
    base = {"model": "linear", "dim": 8, "examples": 64, "steps": 40, "val_every": 5,
            "clip": None, "profile": False, "device": "cpu", "optimizer": "sgd",
            "diverge_steps": 2, "runs_dir": str(runs)}
    sweep_ = S.Sweep(base=base, space=(SP.Param("lr", choices=(0.5, 10.0)),), study="d",
                     storage=str(runs / "sweep-d" / "journal.log"), sampler="grid")
    (runs / "sweep-d").mkdir(parents=True)
    optuna.create_study(study_name="d", storage=S.storage(sweep_.storage))
    SW.run(sweep_, trials=2)
    by_lr = {t.params["lr"]: t for t in S.load(sweep_).trials}
    assert by_lr[10.0].state == optuna.trial.TrialState.COMPLETE and by_lr[10.0].value == math.inf
    assert math.isfinite(by_lr[0.5].value)
    with open_run(runs / by_lr[10.0].user_attrs["run_id"]) as r:
        assert r.info().status == "diverged"


def test_a_space_file_reads_like_the_command_line(tmp_path):
    flat, table = tmp_path / "flat.toml", tmp_path / "table.toml"
    flat.write_text('lr = "1e-4..1e-1:log"\noptimizer = ["sgd", "adam"]\nbatch_size = [32, 64]\n'
                    'clip = [1.0, "off"]\n')
    table.write_text('[space]\nlr = "1e-4..1e-1:log"\noptimizer = "sgd,adam"\n'
                     'batch_size = "32,64"\nclip = "1.0,off"\n')
    cli_space = [SP.parse_param(t) for t in ("lr=1e-4..1e-1:log", "optimizer=sgd,adam",
                                            "batch_size=32,64", "clip=1.0,off")]
    assert SP.params_from_toml(str(flat)) == SP.params_from_toml(str(table)) == cli_space
    assert cli_space[3].choices == (1.0, None)      # 'off' is no clipping, as for --clip


def test_a_resumed_grid_runs_again_the_points_a_signal_cut_short():
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState, create_trial
    from lsml_tui.tui.tuning.sweep import grid_left
    lr = SP.Param("lr", choices=(0.1, 0.5, 0.9))
    dist = {"lr": CategoricalDistribution([0.1, 0.5, 0.9])}
    study = optuna.create_study()
    study.add_trial(create_trial(params={"lr": 0.1}, distributions=dist, value=1.0,
                                 user_attrs={"status": "finished"}))
    study.add_trial(create_trial(params={"lr": 0.5}, distributions=dist, state=TrialState.FAIL,
                                 user_attrs={"status": "interrupted"}))
    requeue, left = grid_left(study, [lr])
    assert requeue == [{"lr": 0.5}]
    assert left == 3 - 1                            # 0.5 again, and 0.9 never started


def processes(pids) -> list[psutil.Process]:
    out = []
    for pid in pids:
        try:
            out.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue                                # gone already
    return out


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


@pytest.mark.skipif(cores() < 2, reason="--jobs 2 needs two cores")
def test_two_jobs_train_in_two_processes_and_leave_none_behind(tmp_path):
    proc = sweep(*SPACE, "--trials", "4", "--jobs", "2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert len(list_runs(tmp_path / "runs")) == 4
    assert len(study_of(tmp_path / "runs").trials) == 4
    pids = run_pids(tmp_path / "runs")
    assert len(pids) == 2                           # two workers, two trials each
    assert not alive(processes(pids))


@pytest.mark.skipif(cores() < 2, reason="--jobs 2 needs two cores")
def test_sigterm_stops_a_parallel_sweep_records_runs_interrupted_and_leaves_no_process(tmp_path):
    runs = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "lsml_tui.tui.cli", "sweep",
                             *tiny(steps=10**7),                # trials that would not end
                             "--runs-dir", "runs", *SPACE, "--trials", "4", "--jobs", "2"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 120           # a bound on waiting, not an assertion
        while time.monotonic() < deadline and len(training(runs)) < 2:
            time.sleep(0.2)
        children = psutil.Process(proc.pid).children(recursive=True)
        pids = run_pids(runs)
        assert len(training(runs)) == 2
        assert len(pids) == 2 and pids <= {c.pid for c in children}  # two worker processes
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:                     # a failed assertion: leave nothing behind
            for p in psutil.Process(proc.pid).children(recursive=True):
                p.kill()
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert {r.status for r in list_runs(runs)} == {"interrupted"}
    assert {t.state for t in study_of(runs).trials} == {optuna.trial.TrialState.FAIL}
    deadline = time.monotonic() + 30                # the resource tracker sees its pipe close
    while alive(children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(children)


def training(runs: Path) -> list:
    return [r for r in list_runs(runs) if r.status == "running"] if runs.is_dir() else []
