"""Formatting shared by the panels and reports: SI units, bytes, N/A for what is missing,
and one line per event."""

from __future__ import annotations

import math

from lsml_tui.trainer import events as E


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


def milliseconds(seconds) -> str:
    return "N/A" if missing(seconds) else f"{seconds * 1e3:.3g} ms"


def percent(value) -> str:
    return "N/A" if missing(value) else f"{value:.0f}%"


def describe(e) -> str:
    """One line for an event the user should see (events panel, report timelines)."""
    match e:
        case E.RunStarted():
            mode = f" in {e.precision}" if e.precision else ""
            return f"run {e.run_id} on {e.device}{mode}, {e.params:,} parameters"
        case E.CommandApplied():
            return f"step {e.step}: {e.detail}"
        case E.CommandRefused():
            return f"step {e.step}: {e.command} refused: {e.reason}"
        case E.NonFiniteGradients():
            return f"step {e.step}: {e.message}"
        case E.Diverged():
            return f"step {e.step}: diverged: {e.message}"
        case E.OutOfMemory():
            return f"step {e.step}: {e.message}"
        case E.RecordingProblem():
            return f"step {e.step}: recording: {e.message} ({e.dropped:,} rows dropped so far)"
        case E.RunFailed():
            return f"step {e.step}: trainer failed: {e.error}"
        case E.Notice():
            return f"step {e.step}: {e.message}"
        case E.Overfitting():
            rise = e.val_loss / e.best_val_loss - 1 if e.best_val_loss > 0 else float("inf")
            return (f"step {e.step}: overfitting: validation loss {e.val_loss:.4g} is {rise:.0%} "
                    f"above its best ({e.best_val_loss:.4g} at step {e.best_val_step}) while "
                    f"training loss fell {e.train_loss_at_best:.4g} -> {e.train_loss:.4g}; "
                    f"early stopping, weight decay (W), dropout (d) or more data would help")
        case E.TraceCaptured():
            return f"step {e.step}: trace of {e.steps} steps written to {e.path}"
        case E.RunFinished():
            return f"step {e.step}: run {e.status}"
    return f"step {e.step}: {type(e).__name__}"
