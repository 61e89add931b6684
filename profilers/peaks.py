"""Peak FLOP/s for MFU: a table for CUDA GPUs, a short measurement for CPUs."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch

# Dense peak FLOP/s by GPU model and math mode, from the vendors' data sheets.
# Longer names first: "H100 PCIe" must match before "H100".
CUDA_PEAKS = {
    "H200": {"bf16": 989e12, "fp16": 989e12, "tf32": 494e12, "fp32": 67e12},
    "H100 PCIe": {"bf16": 756e12, "fp16": 756e12, "tf32": 378e12, "fp32": 51e12},
    "H100": {"bf16": 989e12, "fp16": 989e12, "tf32": 494e12, "fp32": 67e12},
    "A100": {"bf16": 312e12, "fp16": 312e12, "tf32": 156e12, "fp32": 19.5e12},
    "L40S": {"bf16": 362e12, "fp16": 362e12, "tf32": 183e12, "fp32": 91.6e12},
    "L4": {"bf16": 121e12, "fp16": 121e12, "tf32": 60e12, "fp32": 30.3e12},
    "A10": {"bf16": 125e12, "fp16": 125e12, "tf32": 62.5e12, "fp32": 31.2e12},
    "RTX 4090": {"bf16": 165e12, "fp16": 165e12, "tf32": 82.6e12, "fp32": 82.6e12},
    "RTX 3090": {"bf16": 71e12, "fp16": 71e12, "tf32": 35.6e12, "fp32": 35.6e12},
    "V100": {"fp16": 125e12, "fp32": 15.7e12},
    "T4": {"fp16": 65e12, "fp32": 8.1e12},
}


def math_mode(dtype: torch.dtype) -> str:
    if dtype == torch.bfloat16:
        return "bf16"
    if dtype == torch.float16:
        return "fp16"
    return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "fp32"


def cuda_peak(device_name: str, dtype: torch.dtype) -> float | None:
    """The table's peak for this GPU and dtype, or None for a GPU not in the table."""
    mode = math_mode(dtype)
    for model, peaks in CUDA_PEAKS.items():
        if model in device_name:
            return peaks.get(mode)
    return None


def _cache_path() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "lsml-tui" / "cpu-peak.json"


def measure_cpu_peak(n: int = 512, seconds: float = 0.3) -> float:
    """Best fp32 matmul FLOP/s over repeated n x n products on this CPU."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - t0))
    return best


def cpu_peak(cache: Path | None = None) -> float:
    """This machine's measured CPU peak, cached per CPU, thread count and torch version."""
    cache = cache or _cache_path()
    key = f"{platform.processor() or platform.machine()}|{torch.get_num_threads()}|{torch.__version__}"
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known:
        return float(known[key])
    peak = measure_cpu_peak()
    known[key] = peak
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known))
        os.replace(tmp, cache)
    except OSError:
        pass  # an unwritable cache only costs a re-measure next time
    return peak


def peak_flops(device: torch.device, dtype: torch.dtype = torch.float32) -> float | None:
    if device.type == "cuda":
        return cuda_peak(torch.cuda.get_device_name(device), dtype)
    if device.type == "cpu":
        return cpu_peak()
    return None
