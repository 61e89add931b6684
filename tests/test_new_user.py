"""What trying lsml-tui as a new user found (issue 24): each case refused with one line and
exit status 2 before anything starts, or handled as the user would expect."""

from pathlib import Path

import pytest

from lsml_tui.trainer.validate import cores
from tests.conftest import run_cli

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
