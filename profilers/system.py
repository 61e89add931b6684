"""System load: CPU, process memory, and per-GPU figures through NVML.

A figure that cannot be read (no GPU, no NVML, a query the driver refuses) is
``NA``: it prints as N/A and behaves as NaN in arithmetic, so nothing that
draws or sums it raises.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Callable

import psutil


class _NotAvailable(float):
    def __new__(cls):
        return super().__new__(cls, "nan")

    def __repr__(self):
        return "N/A"

    __str__ = __repr__

    def __format__(self, spec):  # keep alignment and width; drop precision and type
        return format("N/A", "".join(c for c in spec.split(".")[0] if c in "<>^0123456789"))


NA = _NotAvailable()


def is_na(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _nvml():
    """The pynvml module, initialised, or None when there is no NVML or no driver."""
    try:
        import pynvml
        pynvml.nvmlInit()
        return pynvml
    except Exception:
        return None


def _read(fn: Callable, scale: float = 1.0):
    try:
        return fn() * scale
    except Exception:
        return NA


def gpu_samples(nvml) -> list[dict]:
    """One dict per visible GPU: util %, memory used/total (bytes), temperature (C), power (W)."""
    if nvml is None:
        return []
    try:
        count = nvml.nvmlDeviceGetCount()
    except Exception:
        return []
    out = []
    for i in range(count):
        try:
            h = nvml.nvmlDeviceGetHandleByIndex(i)
        except Exception:
            continue
        name = _safe(lambda: nvml.nvmlDeviceGetName(h)) or f"GPU {i}"
        mem = _safe(lambda: nvml.nvmlDeviceGetMemoryInfo(h))
        out.append({
            "index": i,
            "name": name.decode() if isinstance(name, bytes) else str(name),
            "util_percent": _read(lambda: nvml.nvmlDeviceGetUtilizationRates(h).gpu),
            "memory_used_bytes": float(mem.used) if mem else NA,
            "memory_total_bytes": float(mem.total) if mem else NA,
            "temperature_c": _read(lambda: nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU)),
            "power_w": _read(lambda: nvml.nvmlDeviceGetPowerUsage(h), 1e-3),
        })
    return out


def _safe(fn):
    try:
        return fn()
    except Exception:
        return None


class SystemSampler:
    """Samples once a second on its own thread and hands each sample to `sink`."""

    def __init__(self, sink: Callable[[dict], None], interval: float = 1.0):
        self._sink, self._interval = sink, interval
        self._stop = threading.Event()
        self._proc = psutil.Process()
        self._nvml = _nvml()
        self._thread = threading.Thread(target=self._run, name="system-sampler", daemon=True)

    @property
    def has_nvml(self) -> bool:
        return self._nvml is not None

    def sample(self) -> dict:
        return {
            "time": time.time(),
            "cpu_percent": psutil.cpu_percent(interval=None),
            "process_cpu_percent": _read(lambda: self._proc.cpu_percent(interval=None)),
            "rss_bytes": _read(lambda: float(self._proc.memory_info().rss)),
            "ram_used_percent": _read(lambda: psutil.virtual_memory().percent),
            "gpus": gpu_samples(self._nvml),
        }

    def start(self) -> "SystemSampler":
        self.sample()  # prime cpu_percent, whose first reading is meaningless
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        if self._nvml is not None:
            _safe(self._nvml.nvmlShutdown)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._sink(self.sample())
            except Exception:
                pass  # a failed sample is skipped; the next one may work
