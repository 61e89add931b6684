"""Peak FLOP/s for MFU, per math mode: a table for CUDA GPUs, a short measurement for CPUs."""

from __future__ import annotations

import json
import os
import platform
import re
import time
from pathlib import Path

import torch

MODES = ("fp32", "tf32", "bf16", "fp16", "fp64")     # fp64: --model linear trains in float64
_CPU_DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16,
               "fp64": torch.float64}

# Dense TFLOPS (no 2:4 sparsity) per math mode, from NVIDIA's data sheets: where a sheet gives only the
# sparse "*" figure it is halved. fp16/bf16 are with FP32 accumulate, as PyTorch's matmuls run. None: no
# such tensor-core mode. The name matching follows Lightning's get_available_flops
# (lightning/fabric/utilities/throughput.py); its _CUDA_FLOPS differs here, and we use the sheets:
#  - H200: Lightning keys "h200 sxm1"/"h200 nvl1", which real names ("NVIDIA H200") never match, and
#    lists H200 NVL as 420/840; GH200 (a GH100 at H100 SXM clocks) it lacks; "L40S" it maps to L4.
#  - RTX 4090 / 3090: Lightning gives bf16 = fp32 (82.6 / 35.6); the Ada and GA102 whitepapers give
#    165.2 / 71 dense BF16 with FP32 accumulate.
#  - A10G: no NVIDIA sheet; Lightning reuses the A10's (125 bf16). Its 80 SMs at 1.71 GHz with GA102's
#    GeForce-rate tensor cores give 35 / 35 / 70 / 70; public bf16 matmul runs on it reach ~69.5.
# Each row: model, name token sets ("|" separates alternatives; all tokens of one must appear in the
# device name), then fp32, tf32, bf16, fp16. More specific rows come first.
_GPUS = [
    # H100 data sheet (SXM, NVL, PCIe columns); H200 data sheet; GH200 data sheet
    ("H100 NVL", "h100 nvl", 60, 417.5, 835.5, 835.5),
    ("H100 PCIe", "h100 pcie|h100 hbm2e", 51, 378, 756.5, 756.5),
    ("H100 SXM", "h100 hbm3|h100 sxm5", 67, 494.5, 989.5, 989.5),
    ("H200 NVL", "h200 nvl", 60, 417.5, 835.5, 835.5),
    ("H200", "h200", 67, 494.5, 989.5, 989.5),
    ("GH200", "gh200", 67, 494.5, 989.5, 989.5),
    # A100 data sheet (SXM4 and PCIe alike), A40, A10 data sheets; A10G see above
    ("A100", "a100", 19.5, 156, 312, 312),
    ("A40", "a40", 37.4, 74.8, 149.7, 149.7),
    ("A10G", "a10g", 35, 35, 70, 70),
    ("A10", "a10", 31.2, 62.5, 125, 125),
    # L40S, L40, L4 data sheets
    ("L40S", "l40s", 91.6, 183, 362.05, 362.05),
    ("L40", "l40", 90.5, 90.5, 181.05, 181.05),
    ("L4", "l4", 30.3, 60, 121, 121),
    # Ada whitepaper (RTX 4090), GA102 whitepaper (RTX 3090): GeForce columns, FP32 accumulate
    ("RTX 4090", "rtx 4090", 82.6, 82.6, 165.2, 165.2),
    ("RTX 3090", "rtx 3090", 35.6, 35.6, 71, 71),
    # T4 data sheet ("mixed precision" = fp16); V100 data sheet (SXM2, PCIe, V100S PCIe)
    ("T4", "t4", 8.1, None, None, 65),
    ("V100 SXM2", "v100 sxm2", 15.7, None, None, 125),
    ("V100 PCIe", "v100 pcie", 14, None, None, 112),
    ("V100S PCIe", "v100s", 16.4, None, None, 130),
]


def _match(device_name: str) -> tuple | None:
    tokens = set(re.findall(r"[a-z0-9]+", device_name.lower()))
    for row in _GPUS:
        if any(set(alt.split()) <= tokens for alt in row[1].split("|")):
            return row
    return None


def gpu_model(device_name: str) -> str | None:
    """The table's model for a torch.cuda.get_device_name() string, e.g. "H100 SXM"; None if unknown."""
    row = _match(device_name)
    return row[0] if row else None


def cuda_peak(device_name: str, mode: str) -> float | None:
    """Dense peak FLOP/s of this GPU in this math mode; None for an unknown GPU or a mode it lacks."""
    if mode not in MODES:
        raise ValueError(f"unknown math mode {mode!r}; expected one of {MODES}")
    if mode == "fp64":          # not in the table: GPUs' fp64 rates differ by 64x; N/A
        return None
    row = _match(device_name)
    tflops = row[2 + MODES.index(mode)] if row else None
    return None if tflops is None else tflops * 1e12


def _cache_path() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "lsml-tui" / "cpu-peak.json"


def measure_cpu_peak(n: int = 512, seconds: float = 0.3, dtype: torch.dtype = torch.float32) -> float:
    """Best matmul FLOP/s over repeated n x n products in `dtype` on this CPU."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / max(time.perf_counter() - t0, 1e-9))
    return best


def cpu_peak(mode: str = "fp32", cache: Path | None = None, at_least: float = 0.0) -> float:
    """This CPU's measured peak in `mode`, cached per CPU, thread count, torch version and mode.

    bf16/fp16 time a matmul in that dtype (CPU autocast runs matmuls in bf16); tf32 is fp32 on a CPU.
    A measurement taken while the machine was busy reads low, and a cached figure would stay
    low: a caller that has seen this CPU achieve more (`at_least`: FLOP/s above the cached
    peak, an MFU over 100%) has it measured again, and the cache keeps the largest of the
    old figure, the new one and `at_least`.
    """
    if mode not in MODES:
        raise ValueError(f"unknown math mode {mode!r}; expected one of {MODES}")
    mode = "fp32" if mode == "tf32" else mode
    cache = cache or _cache_path()
    cpu = platform.processor() or platform.machine()
    key = f"{cpu}|{torch.get_num_threads()}|{torch.__version__}|{mode}"
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known and known[key] >= at_least:
        return float(known[key])
    peak = max(measure_cpu_peak(dtype=_CPU_DTYPES[mode]), at_least, known.get(key, 0.0))
    known[key] = peak
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known))
        os.replace(tmp, cache)
    except OSError:
        pass  # an unwritable cache only costs a re-measure next time
    return peak


def peak_flops(device: torch.device, mode: str = "fp32") -> float | None:
    """Peak FLOP/s of `device` in math mode `mode`, or None where it is unknown."""
    if device.type == "cuda":
        return cuda_peak(torch.cuda.get_device_name(device), mode)
    if device.type == "cpu":
        return cpu_peak(mode)
    return None
