"""Number formatting shared by the panels: SI units, bytes, N/A for what is missing."""

from __future__ import annotations

import math


def missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def si(value, unit: str = "") -> str:
    """1.23 G, 456 M, 7.8 k: three significant figures."""
    if missing(value):
        return "N/A"
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}".rstrip()


def nbytes(value) -> str:
    """Binary units: 1.5 KiB, 3.2 MiB."""
    if missing(value):
        return "N/A"
    for factor, prefix in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}"
    return f"{int(value)} B"


def percent(value) -> str:
    return "N/A" if missing(value) else f"{value:.0f}%"
