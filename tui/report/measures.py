"""The report's sampled measurements of the loss landscape: sharpness against the optimizer's
edge-of-stability limit (--sharpness-every) and the gradient noise scale against the batch
(--noise-scale-every). Each block is null when the run did not measure it. No torch or
matplotlib here."""

from __future__ import annotations

import math
import statistics

from lsml_tui.profilers.noise import batch_tradeoff
from lsml_tui.tui.format import missing

SHARPNESS_NOTE = ("Sharpness: the top Hessian eigenvalue on a fixed batch (of P^-1/2 H P^-1/2 "
                  "with Adam's preconditioner P for Adam/AdamW), by power iteration. A step is "
                  "stable while it stays below the limit: 2/lr for SGD, (2+2b)/lr with momentum "
                  "b, (2+2 beta1)/((1-beta1) lr) for Adam (Cohen et al. 2021, 2022).")
NOISE_NOTE = ("Noise scale: B_simple = tr(Sigma)/|G|^2 (McCandlish et al. 2018) from equal "
              "parts of a batch against their mean. At batch B a run takes about "
              "(1 + B_simple/B) times the fewest steps and (1 + B/B_simple) times the fewest "
              "examples.")


def _finite(values) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def sharpness_summary(samples: list[dict]) -> dict | None:
    """The last measurement against its limit, the largest, how many went past the limit."""
    if not samples:
        return None
    last = samples[-1]
    over = [s for s in samples if s["threshold"] and _finite([s["sharpness"]])
            and s["sharpness"] > s["threshold"]]
    ok = _finite([last["sharpness"]]) and last["threshold"]
    return {
        "last": last["sharpness"],
        "threshold": last["threshold"],
        "ratio": last["sharpness"] / last["threshold"] if ok else None,
        "max": max(_finite(s["sharpness"] for s in samples), default=None),
        "preconditioned": last["preconditioned"],
        "measurements": len(samples),
        "above_threshold": len(over),
        "seconds_per_measurement": statistics.fmean(s["seconds"] for s in samples),
    }


def noise_summary(samples: list[dict]) -> dict | None:
    """The latest defined B_simple against the batch, and what that batch costs."""
    if not samples:
        return None
    defined = [s for s in samples if s["noise_scale"] is not None]
    last, batch = (defined or samples)[-1], samples[-1]["batch"]
    value = last["noise_scale"] if defined else None
    steps, examples = batch_tradeoff(value, batch) if value else (None, None)
    return {
        "last": value,
        "batch": batch,
        "part": samples[-1]["part"],
        "steps_factor": steps,
        "examples_factor": examples,
        "measurements": len(samples),
        "seconds_per_measurement": statistics.fmean(s["seconds"] for s in samples),
    }


def _num(value, spec: str = ".4g") -> str:
    return "N/A" if missing(value) else format(value, spec)


def sharpness_rows(r: dict) -> list[list[str]]:
    s = r["sharpness"]
    what = "preconditioned sharpness" if s["preconditioned"] else "sharpness"
    ratio = "N/A" if missing(s["ratio"]) else f"{s['ratio']:.0%}"
    return [[f"{what}: last / limit", f"{_num(s['last'])} / {_num(s['threshold'])} ({ratio})"],
            ["largest measured", _num(s["max"])],
            ["measurements above the limit", f"{s['above_threshold']:,} of {s['measurements']:,}"],
            ["cost per measurement", f"{_num(s['seconds_per_measurement'], '.2g')} s"]]


def noise_rows(r: dict) -> list[list[str]]:
    n = r["noise_scale"]
    return [["B_simple vs batch", f"{_num(n['last'], '.3g')} vs {n['batch']}"],
            ["this batch: steps / examples against the fewest",
             f"{_num(n['steps_factor'], '.3g')}x / {_num(n['examples_factor'], '.3g')}x"],
            ["measurements (parts of)", f"{n['measurements']:,} ({n['part']} examples)"],
            ["cost per measurement", f"{_num(n['seconds_per_measurement'], '.2g')} s"]]


def sections(r: dict) -> list[tuple[str, list[list[str]], str, str]]:
    """(title, rows, note, sample kind) for each measurement the run made: what HTML and
    Markdown show (HTML charts the samples of that kind)."""
    out = []
    if r.get("sharpness"):
        out.append(("Sharpness (edge of stability)", sharpness_rows(r), SHARPNESS_NOTE,
                    "SharpnessSample"))
    if r.get("noise_scale"):
        out.append(("Gradient noise scale", noise_rows(r), NOISE_NOTE, "NoiseSample"))
    return out
