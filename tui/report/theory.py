"""--model linear: the report's "Theory (least squares)" block and its table rows.

The block is the `theory` dict the trainer stored with the run's final summary; a run
without one yet (still going, or killed) gets what its last TheoryInfo says, with the
measured figures null. Every other model's block is null. No torch or matplotlib here.
"""

from __future__ import annotations

from lsml_tui.tui.format import missing

CLIP_NOTE = "clipping is outside the theory: rerun with --clip off"
RATE_NOTE = ("Rate: the per-step factor of ||w - w*||; theory's is the full-batch map's "
             "spectral radius, the measured one a fit of log ||w - w*|| over the last half "
             "of the run.")
BALL_NOTE = ("With minibatches SGD stalls in a noise ball: the measured rate there is "
             "close to 1, and the ball is what to compare.")


def theory_summary(run) -> dict | None:
    """The summary's theory dict as stored; from the last TheoryInfo while there is none.
    None for a run that is not --model linear."""
    stored = (run.info.summary or {}).get("theory")
    if stored is not None:
        return stored
    info = run.latest("TheoryInfo")
    if info is None:
        return None
    sample = run.latest("TheorySample")
    return {
        **{k: info[k] for k in ("L", "mu", "kappa", "optimizer", "lr", "rate_theory")},
        "rate_measured": None,
        "lr_limit": info["lr_limit"],
        "distance": (sample or info)["distance"],           # the latest recorded
        "noise_ball_theory": info["noise_ball"],
        "noise_ball_measured": None,
        "clipped_steps": len(run.clips["step"]),
        "distance_averaged": (sample or {}).get("distance_averaged"),   # --average
    }


def number(value, spec: str = ".4g") -> str:
    return "N/A" if missing(value) else format(value, spec)


def rate(value) -> str:
    """A per-step factor: six figures, as rates sit close to 1 (0.99 against 0.9876)."""
    return number(value, ".6g")


def theory_rows(r: dict) -> list[list[str]]:
    """L, mu, kappa, optimizer and lr; rate theory against measured; the stable-lr limit;
    the final distance; the noise ball when there is one; clipped steps."""
    t = r["theory"]
    beyond = (not missing(t["lr"]) and not missing(t["lr_limit"]) and t["lr"] > t["lr_limit"])
    no_theory = f" (no theory for {t['optimizer']})" if t["rate_theory"] is None else ""
    rows = [
        ["L (largest Hessian eigenvalue)", number(t["L"])],
        ["mu (smallest)", number(t["mu"])],
        ["kappa = L / mu", number(t["kappa"])],
        ["optimizer, lr", f"{t['optimizer'] or 'N/A'}, lr {number(t['lr'], 'g')}"],
        ["rate per step: theory / measured",
         f"{rate(t['rate_theory'])}{no_theory} / {rate(t['rate_measured'])}"],
        ["stability limit (largest stable lr)",
         number(t["lr_limit"]) + (": lr is beyond it, the run diverges" if beyond else "")],
        ["final ||w - w*||", number(t["distance"])],
    ]
    if t.get("distance_averaged") is not None:                  # --average
        rows.append(["final ||w_avg - w*|| (averaged weights)", number(t["distance_averaged"])])
    if t["noise_ball_theory"] is not None:
        rows.append(["noise ball E||w - w*||^2: theory / measured (last half)",
                     f"{number(t['noise_ball_theory'])} / {number(t['noise_ball_measured'])}"])
    clipped = t["clipped_steps"] or 0
    rows.append(["clipped steps", f"{clipped:,}" + (f" ({CLIP_NOTE})" if clipped else "")])
    return rows


def theory_notes(r: dict) -> list[str]:
    """What the table's figures mean, and the clipping warning when it applies."""
    t = r["theory"]
    notes = [RATE_NOTE] + ([BALL_NOTE] if t["noise_ball_theory"] is not None else [])
    if t["clipped_steps"]:
        notes.append(f"{t['clipped_steps']:,} steps were clipped: {CLIP_NOTE}.")
    return notes
