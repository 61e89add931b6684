"""Capture N training steps with torch.profiler into a Chrome/Perfetto trace."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile


class TraceCapture:
    """Started before a step, ``step()`` after each; after `steps` steps it writes the trace."""

    def __init__(self, path: Path, steps: int, device: torch.device):
        self.path, self.steps, self.remaining = Path(path), steps, steps
        activities = [ProfilerActivity.CPU]
        if device.type == "cuda":
            activities.append(ProfilerActivity.CUDA)
        self._prof = profile(activities=activities, record_shapes=True, with_stack=False)
        self._prof.__enter__()

    def step(self) -> Path | None:
        """Count one step; return the trace's path once it is written."""
        self.remaining -= 1
        if self.remaining > 0:
            return None
        self._prof.__exit__(None, None, None)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self._prof.export_chrome_trace(str(tmp))
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)
        return self.path

    def abandon(self) -> None:
        self._prof.__exit__(None, None, None)
