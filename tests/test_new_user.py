"""What trying lsml-tui as a new user found (issue 24): each case refused with one line and
exit status 2 before anything starts, or handled as the user would expect."""

import os
from pathlib import Path

import pytest

from lsml_tui.trainer.store.reader import list_runs, open_run
from lsml_tui.trainer.store.schema import DB_NAME
from lsml_tui.trainer.validate import cores
from tests.conftest import run_cli, run_here

PROC = Path("/proc")
needs_proc = pytest.mark.skipif(not PROC.is_dir(), reason="no /proc here")


@needs_proc
@pytest.mark.parametrize("args", [
    ["--headless", "--runs-dir", "/proc/forbidden"],
    ["lr-find", "--runs-dir", "/proc/forbidden"],
    ["sweep", "--runs-dir", "/proc/forbidden", "--space", "lr=0.001..0.1:log"],
])
def test_a_runs_dir_that_cannot_be_created_is_one_line_and_exit_2(args, tmp_path):
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "'/proc/forbidden' cannot be created" in line and "Traceback" not in proc.stderr


@needs_proc
def test_a_report_out_dir_that_cannot_be_created_is_refused(tmp_path):
    run = run_cli("--headless", "--no-progress", "--model", "linear", "--steps", "3",
                  "--runs-dir", str(tmp_path / "runs"))
    assert run.returncode == 0, run.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    proc = run_cli("report", str(run_dir), "--out", "/proc/forbidden/reports")
    assert proc.returncode == 2
    assert "--out '/proc/forbidden/reports' cannot be written" in proc.stderr


def test_more_cpu_ranks_than_cores_is_refused_unless_asked_for():
    n = cores() + 1
    proc = run_cli("--headless", "--device", "cpu", "--workers", str(n), "--model", "mlp")
    assert proc.returncode == 2
    assert f"--workers {n} is more than the {cores()} cores here" in proc.stderr
    assert "--oversubscribe" in proc.stderr
    asked = run_cli("--device", "cpu", "--workers", str(n), "--oversubscribe", "--print-config")
    assert asked.returncode == 0 and "oversubscribe = true" in asked.stdout


@pytest.fixture(scope="module")
def two_damaged(tmp_path_factory):
    """Three real runs: one left whole, one whose store is not a database, one cut short."""
    runs = tmp_path_factory.mktemp("damaged") / "runs"
    for _ in range(3):
        run_here("--model", "linear", "--steps", "1500", "--runs-dir", str(runs))
    whole, garbage, cut = sorted(runs.iterdir())
    steps = [r.steps for r in list_runs(runs)]
    (garbage / DB_NAME).write_bytes(b"not a database, just bytes " * 100)
    db = cut / DB_NAME
    os.truncate(db, db.stat().st_size // 2)
    return runs, whole, garbage, cut, steps


def test_runs_lists_a_damaged_store_with_the_reason(two_damaged):
    runs, whole, garbage, cut, _ = two_damaged
    proc = run_cli("runs", "--runs-dir", str(runs))
    assert proc.returncode == 0
    lines = {line.split()[0]: line for line in proc.stdout.splitlines()[1:]}
    assert "finished" in lines[whole.name]
    assert "damaged: file is not a database" in lines[garbage.name]
    assert "damaged" in lines[cut.name] and "lsml-tui repair" in lines[cut.name]


@pytest.mark.parametrize("command", ["report", "open"])
def test_report_and_open_refuse_a_damaged_store_in_one_line(two_damaged, command):
    _, _, garbage, cut, _ = two_damaged
    for run_dir in (garbage, cut):
        proc = run_cli(command, str(run_dir))
        assert proc.returncode == 2
        (line,) = proc.stderr.strip().splitlines()
        assert f"{run_dir / DB_NAME}: the run store is damaged (" in line
        assert f"lsml-tui repair {run_dir}" in line and "Traceback" not in proc.stderr


def test_repair_keeps_what_can_be_read_and_the_store_reads_again(two_damaged):
    _, _, garbage, cut, steps = two_damaged
    proc = run_cli("repair", str(cut))
    assert proc.returncode == 0 and "recovered" in proc.stdout
    assert (cut / "run.damaged.sqlite").is_file()               # kept beside the new one
    with open_run(cut) as r:
        recovered = r.steps()["step"]
        info = r.info()
    # half the file was cut off: a first part of the steps survives, in order, none invented
    assert 0 < len(recovered) < steps[2] and recovered == list(range(len(recovered)))
    assert info.model == "linear" and info.status == "finished"
    assert run_cli("report", str(cut), "--format", "json").returncode == 0
    again = run_cli("repair", str(garbage))                       # nothing readable at all
    assert again.returncode == 0
    with open_run(garbage) as r:                                  # the run from its config
        assert (r.info().status, r.info().model, r.info().steps) == ("damaged", "linear", 0)


def test_the_linear_model_says_fp64_and_its_mfu_is_against_an_fp64_peak(tmp_path):
    import json
    import subprocess
    import sys
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}   # a peak measured now
    proc = subprocess.run([sys.executable, "-m", "lsml_tui.tui.cli", "--headless", "--json",
                           "--no-progress", "--model", "linear", "--steps", "30",
                           "--runs-dir", str(tmp_path / "runs")],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["precision"] == "fp64"
    peaks = json.loads((tmp_path / "cache" / "lsml-tui" / "cpu-peak.json").read_text())
    (fp64,) = [v for k, v in peaks.items() if k.endswith("|fp64")]
    assert summary["peak_flops_per_second"] == fp64
    assert summary["mfu"] == pytest.approx(summary["achieved_flops_per_second"] / fp64)
    (run_dir,) = (tmp_path / "runs").iterdir()
    with open_run(run_dir) as r:
        assert r.events("RunStarted")[0]["precision"] == "fp64"


def test_the_html_report_of_a_200k_step_run_stays_small(tmp_path):
    """Every chart is drawn from decimated series (min and max per bucket, so spikes
    survive), clip events and validation included: the page's size does not grow with the
    number of steps. A synthetic store: 200,000 steps, a clip on every other one, a
    validation every 100, written through the real store."""
    from lsml_tui.trainer.store.writer import RunStore
    from lsml_tui.tui.report import write_reports
    config = {"model": "mlp", "optimizer": "adam", "norm": "none", "batch_size": 128,
              "clip": 1.0}
    store = RunStore.create(tmp_path / "runs", config, "", flush_interval=0.05)
    store.max_pending = 10**6
    for step in range(200_000):
        norm = 1.5 if step % 2 else 0.5
        store.record_step(step, float(step), 2.0 / (1 + step / 1000), 1e-3, norm,
                          min(norm, 1.0), step % 2 == 1, 1e4)
        if step % 2:
            store.record_clip(step, norm, 1.0, 1.0 / (norm + 1e-6))
        if step % 100 == 99:
            store.record_val(step, float(step), 2.5 / (1 + step / 1000))
    store.set_status("finished", {"steps": 200_000})
    store.close()
    (path,) = write_reports([store.run_dir], ["html"])
    assert path.stat().st_size < 2 * 2**20                  # the bound: 2 MiB
    with open_run(store.run_dir) as r:
        assert len(r.steps()["step"]) == 200_000            # (the store has every step)
