"""Where a trainer runs: the device (auto picks CUDA, then MPS, then CPU) and, on request,
deterministic kernels."""

from __future__ import annotations

import os

import torch

from lsml_tui.trainer.config import ConfigError


def resolve_device(name: str) -> torch.device:
    """auto picks CUDA, then MPS, then CPU; an explicit device must exist here."""
    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps and mps.is_available())
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu")
    dev = torch.device(name)
    ok = {"cpu": True, "mps": has_mps,
          "cuda": torch.cuda.is_available() and (dev.index or 0) < torch.cuda.device_count()}
    if not ok[dev.type]:
        here = ["auto", "cpu"] + (["cuda"] if torch.cuda.is_available() else []) + (["mps"] if has_mps else [])
        raise ConfigError(f"--device {name!r} is not available on this machine; allowed here: "
                          f"{', '.join(here)}")
    return dev


def make_deterministic() -> None:
    """Same seed, same losses on CUDA too: deterministic kernels only (cuDNN's convolution
    autotuner off, a fixed cuBLAS workspace). An op with no deterministic kernel warns once
    instead of failing the run. Process-wide, so it is for a trainer's own process."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")   # read when cuBLAS starts
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
