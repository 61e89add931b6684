"""The measured convergence rate of a run: plain Python, so the dashboard can use it too."""

from __future__ import annotations

import math


def fitted_rate(steps: list[int], distances: list[float], floor: float = 1e-12) -> float | None:
    """exp of the least-squares slope of ln distance against step over the later half of the
    steps, leaving out non-finite values and those at rounding level (below `floor` x the
    first): the per-step factor a linearly converging run shrinks by."""
    if len(steps) < 2 or not (distances[0] > 0 and math.isfinite(distances[0])):
        return None
    cut = (steps[0] + steps[-1]) / 2
    pts = [(s, math.log(d)) for s, d in zip(steps, distances)
           if s >= cut and math.isfinite(d) and d > floor * distances[0]]
    if len(pts) < 2:
        return None
    ms, ml = sum(s for s, _ in pts) / len(pts), sum(v for _, v in pts) / len(pts)
    var = sum((s - ms) ** 2 for s, _ in pts)
    slope = sum((s - ms) * (v - ml) for s, v in pts) / var if var else None
    return math.exp(slope) if slope is not None and slope < 700 else None
