"""Bounded plot series: recent points exact, older points as min/max buckets.

A million-step run holds and draws about as many points as a few-thousand-step
one: the newest ``recent`` points are kept as they are; older points are folded
into buckets that keep each span's minimum and maximum (so a spike survives),
and when there are more than ``max_buckets`` buckets, neighbours merge.
"""

from __future__ import annotations

import math

FOLD = 256      # exact points moved into buckets at a time


class Series:
    def __init__(self, recent: int = 2000, max_buckets: int = 1000):
        self.recent, self.max_buckets = recent, max_buckets
        self._x: list[float] = []
        self._y: list[float] = []
        # (x_first, x_last, y_first_extreme, y_second_extreme): the extremes in time order
        self._buckets: list[tuple[float, float, float, float]] = []
        self._width = 4                  # raw points per new bucket; doubles on each merge
        self.count = 0
        self.last: float | None = None

    def append(self, x: float, y: float) -> None:
        if y is None or not math.isfinite(y):
            return
        self._x.append(x)
        self._y.append(y)
        self.count += 1
        self.last = y
        if len(self._x) >= self.recent + FOLD:   # fold a little at a time, so what is
            self._fold(FOLD)                       # held never depends on the run's length

    def _fold(self, n: int) -> None:
        """Move the oldest `n` exact points into buckets."""
        xs, ys = self._x[:n], self._y[:n]
        del self._x[:n], self._y[:n]
        w = min(self._width, n)
        for i in range(0, n, w):
            bx, by = xs[i:i + w], ys[i:i + w]
            lo, hi = by.index(min(by)), by.index(max(by))
            a, b = (by[lo], by[hi]) if lo <= hi else (by[hi], by[lo])
            self._buckets.append((bx[0], bx[-1], a, b))
        while len(self._buckets) > self.max_buckets:
            self._merge()

    def _merge(self) -> None:
        merged = []
        for i in range(0, len(self._buckets) - 1, 2):
            (x0, _, a0, b0), (_, x1, a1, b1) = self._buckets[i], self._buckets[i + 1]
            ys = [a0, b0, a1, b1]
            lo, hi = ys.index(min(ys)), ys.index(max(ys))
            merged.append((x0, x1, *((ys[lo], ys[hi]) if lo <= hi else (ys[hi], ys[lo]))))
        if len(self._buckets) % 2:
            merged.append(self._buckets[-1])
        self._buckets = merged
        self._width *= 2

    def points(self, columns: int | None = None) -> tuple[list[float], list[float]]:
        """x and y to draw: two points per bucket (its extremes), then the exact tail.

        With `columns`, at most two points (min and max) per column: a plot
        cannot show more, and drawing fewer points is what keeps redraws cheap.
        """
        xs: list[float] = []
        ys: list[float] = []
        for x0, x1, a, b in self._buckets:
            xs += [x0, x1]
            ys += [a, b]
        xs, ys = xs + self._x, ys + self._y
        if columns is None or len(xs) <= 2 * columns:
            return xs, ys
        return _per_column(xs, ys, columns)

    def __len__(self) -> int:
        return len(self._x) + 2 * len(self._buckets)


def _per_column(xs: list[float], ys: list[float], columns: int) -> tuple[list[float], list[float]]:
    """Min and max of y in each of `columns` equal slices of the x range, in time order."""
    lo_x, span = xs[0], (xs[-1] - xs[0]) or 1.0
    out_x: list[float] = []
    out_y: list[float] = []
    start = 0
    for c in range(columns):
        edge = lo_x + span * (c + 1) / columns
        end = start
        while end < len(xs) and (xs[end] <= edge or c == columns - 1):
            end += 1
        if end > start:
            seg = ys[start:end]
            i, j = seg.index(min(seg)), seg.index(max(seg))
            for k in sorted({i, j}):
                out_x.append(xs[start + k])
                out_y.append(seg[k])
        start = end
    return out_x, out_y


class EMA:
    """Exponential moving average, bias-corrected like Adam's moments."""

    def __init__(self, beta: float = 0.98):
        self.beta, self._avg, self._n = beta, 0.0, 0

    def update(self, y: float) -> float:
        self._n += 1
        self._avg = self.beta * self._avg + (1 - self.beta) * y
        return self._avg / (1 - self.beta ** self._n)
