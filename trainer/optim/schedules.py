"""Learning-rate schedules: a multiplier on the base lr at each step."""

from __future__ import annotations

import math


def lr_factor(schedule: str, step: int, total: int, warmup: int, decay_every: int,
              gamma: float = 0.5, min_ratio: float = 0.1) -> float:
    """Multiplier on the base lr at `step` (0-based) of `total`."""
    if schedule == "constant":
        return 1.0
    if schedule == "warmup-cosine":
        if step < warmup:
            return (step + 1) / warmup                       # linear warm-up to 1
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "step":
        return gamma ** (step // decay_every)                # halve every decay_every steps
    if schedule == "inverse-time":
        return 1.0 / (1.0 + step / decay_every)              # 1/t: half at step decay_every
    raise ValueError(f"unknown schedule {schedule!r}")
