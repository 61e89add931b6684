"""Charts of the optimization-theory measurements, as inline SVG: the distance to w* on the
linear family beside theory's line and noise ball, sharpness against the optimizer's
edge-of-stability limit, and the gradient noise scale against the batch size."""

from __future__ import annotations

import math

from lsml_tui.tui.report.charts import decimated, new_figure, styled, svg_of
from lsml_tui.tui.report.data import RunData


def predicted(info: dict, end: int, lo: float, hi: float) -> tuple[list, list]:
    """Theory's line from a TheoryInfo's step to `end`: distance * rate ** (t - step), the
    part within [lo, hi] (a straight line on a log axis, so its two ends draw it)."""
    rate, start, d0 = info["rate_theory"], info["step"], info["distance"]
    if rate is None or not rate > 0 or not d0 > 0:
        return [], []
    logs = [(t, math.log(d0) + (t - start) * math.log(rate)) for t in range(start, end + 1)]
    inside = [(t, math.exp(v)) for t, v in logs if math.log(lo) <= v <= math.log(hi)]
    return ([inside[0][0], inside[-1][0]], [inside[0][1], inside[-1][1]]) if inside else ([], [])


@styled
def distance_chart(run: RunData) -> str:
    """--model linear: ||w - w*|| against step on a log axis (and ||w_avg - w*|| with
    --average), theory's line dashed from each TheoryInfo to the next, and the noise ball's
    sqrt(E||w - w*||^2) when there is one."""
    fig, ax = new_figure()
    samples, infos = run.samples["TheorySample"], run.samples["TheoryInfo"]
    steps = [s["step"] for s in samples]
    dist = [s["distance"] if s["distance"] > 0 else math.nan for s in samples]
    ax.plot(*decimated(steps, dist), lw=1, label="measured ||w - w*||")
    averaged = [(s["step"], s["distance_averaged"]) for s in samples
                if s.get("distance_averaged") is not None]          # --average
    avg = [d if d > 0 else math.nan for _, d in averaged]
    if averaged:
        ax.plot(*decimated([t for t, _ in averaged], avg), lw=1, color="tab:purple",
                label="averaged ||w_avg - w*||")
    seen = [d for d in dist + avg if math.isfinite(d)]
    lo, hi = (min(seen) / 10, max(seen) * 10) if seen else (1e-12, 1e3)
    last = steps[-1] if steps else max((i["step"] for i in infos), default=0)
    labels = {"line": "theory: distance · rate^(t - step)",
              "ball": "noise ball sqrt(E||w - w*||²), theory"}      # on the first of each
    for info, nxt in zip(infos, [*infos[1:], None]):
        end = nxt["step"] if nxt else last
        xs, ys = predicted(info, end, lo, hi)
        if xs:
            ax.plot(xs, ys, color="tab:orange", lw=1, ls="--", label=labels.pop("line", None))
        if info["noise_ball"]:
            ax.hlines(math.sqrt(info["noise_ball"]), info["step"], end, color="tab:red", lw=0.8,
                      ls=":", label=labels.pop("ball", None))
    ax.set_yscale("log")
    ax.set(xlabel="step", ylabel="||w - w*||", title="Distance to w*")
    ax.legend(loc="upper right", fontsize=7)
    return svg_of(fig)


@styled
def sharpness_chart(run: RunData) -> str:
    """--sharpness-every: the measured sharpness and the limit each measurement recorded."""
    fig, ax = new_figure(2.8)
    samples = run.samples["SharpnessSample"]
    steps = [s["step"] for s in samples]
    ax.plot(steps, [s["sharpness"] for s in samples], "o-", ms=3, lw=1, color="tab:blue",
            label="sharpness" + (" (preconditioned)" if samples and samples[-1]["preconditioned"]
                                 else ""))
    limit = [math.nan if s["threshold"] is None else s["threshold"] for s in samples]
    ax.plot(steps, limit, lw=1, ls="--", color="tab:red", label="limit")
    ax.set_yscale("log")
    ax.set(xlabel="step", ylabel="top Hessian eigenvalue", title="Sharpness against its limit")
    ax.legend(loc="lower right", fontsize=7)
    return svg_of(fig)


@styled
def noise_chart(run: RunData) -> str:
    """--noise-scale-every: B_simple over the run, the batch size in use as a line."""
    fig, ax = new_figure(2.8)
    samples = [s for s in run.samples["NoiseSample"] if s["noise_scale"] is not None]
    ax.plot([s["step"] for s in samples], [s["noise_scale"] for s in samples], "o-", ms=3, lw=1,
            color="tab:green", label="B_simple = tr(Σ)/|G|²")
    batch = run.samples["NoiseSample"][-1]["batch"]
    ax.axhline(batch, color="tab:gray", lw=1, ls="--", label=f"batch {batch}")
    ax.set_yscale("log")
    ax.set(xlabel="step", ylabel="examples", title="Gradient noise scale against the batch")
    ax.legend(loc="lower right", fontsize=7)
    return svg_of(fig)
