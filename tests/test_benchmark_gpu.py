"""benchmarks/gpu.py: says so and exits 0 without a GPU; its CPU smoke mode prints the table."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu.py"


def run(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_no_cuda_device_exits_zero():
    proc = run()
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "no CUDA device"


def test_cpu_smoke_prints_a_row_and_the_summary():
    proc = run("--device", "cpu", "--models", "mlp", "--compile-modes", "off", "--repeats", "1",
               "--chunk", "2")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "math mode bf16" in lines[0]
    row = next(line for line in lines if line.startswith("mlp "))
    cells = row.split()
    assert cells[1] == "off" and float(cells[2]) > 0 and float(cells[3]) > 0
    assert lines[-1].endswith("rows met the goal lsml/bare >= 0.90")
    assert lines[-1].startswith(("0 of 1", "1 of 1"))
