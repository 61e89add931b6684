"""Step time split into phases (data, forward, backward, optimizer), right on CUDA too."""

from __future__ import annotations

import time

import torch


class PhaseTimer:
    """``mark(name)`` ends the phase `name` at this point; ``result()`` gives seconds per phase.

    On CUDA the marks are events on the stream and ``result`` synchronises once,
    so a sampled step pays one sync, and unsampled steps pay nothing.
    """

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self._marks: list[tuple[str, object]] = []

    def start(self) -> None:
        self._marks = [("start", self._now())]

    def mark(self, phase: str) -> None:
        self._marks.append((phase, self._now()))

    def _now(self):
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    def result(self) -> dict[str, float]:
        if self.cuda:
            self._marks[-1][1].synchronize()
            return {name: a.elapsed_time(b) / 1e3 for (_, a), (name, b)
                    in zip(self._marks, self._marks[1:])}
        return {name: b - a for (_, a), (name, b) in zip(self._marks, self._marks[1:])}
