"""Report charts as inline SVG (the theory measurements' are in theory_charts.py), drawn with matplotlib (no pyplot: each chart is its own
``Figure``, so reports can be written from a worker thread of the dashboard).

Long runs draw as fast as short ones: per-step series go through the dashboard's
``Series`` (min/max per plot column, so spikes survive) before they are plotted.
"""

from __future__ import annotations

import functools
import io
import math
import re

import matplotlib
from matplotlib.figure import Figure

from lsml_tui.tui.report.data import MEMORY_PARTS, RunData, rank_means, slowest_rank
from lsml_tui.tui.report.parallel import held as held_by_rank, memory_per_rank_chart
from lsml_tui.tui.series import Series

COLUMNS = 800               # points per series a chart draws at most (two per column)
RC = {"svg.fonttype": "none", "svg.hashsalt": "lsml-tui", "font.size": 9,
      "axes.spines.top": False, "axes.spines.right": False}
NO_METADATA = {"Creator": None, "Date": None, "Format": None, "Type": None}
RANK_PARTS = (("compute_s", "compute", "tab:green"), ("comm_s", "comm", "tab:blue"),
              ("wait_s", "wait", "tab:olive"))     # the dashboard panel's order and colours
LABELS = {"param_bytes": "parameters", "grad_bytes": "gradients",
          "optimizer_state_bytes": "optimizer state", "saved_activation_bytes": "activations"}


def styled(chart):
    """Draw `chart` under the report's matplotlib settings, without touching the globals."""
    @functools.wraps(chart)
    def draw(*args):
        with matplotlib.rc_context(RC):
            return chart(*args)
    return draw


def _nan_if_none(value) -> float:
    return math.nan if value is None else value


def new_figure(height: float = 3.2) -> tuple[Figure, object]:
    fig = Figure(figsize=(8, height), layout="constrained")
    return fig, fig.add_subplot()


def svg_of(fig: Figure) -> str:
    """The figure as an <svg> element, ready to inline (no XML prolog, no metadata)."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata=NO_METADATA)
    text = buf.getvalue()
    return re.sub(r"<metadata>.*?</metadata>", "", text[text.index("<svg"):], flags=re.S)


def decimated(xs, ys) -> tuple[list, list]:
    s = Series(recent=2 * COLUMNS, max_buckets=COLUMNS)
    for x, y in zip(xs, ys):
        s.append(x, y)
    return s.points(COLUMNS)


def _label(run: RunData, several: bool) -> str:
    i = run.info
    return f"{i.id} ({i.optimizer}, norm {i.norm})" if several else "train"


@styled
def loss_chart(runs: list[RunData]) -> str:
    """Train (and validation) loss against step; switch markers for a single run."""
    fig, ax = new_figure()
    several = len(runs) > 1
    for run in runs:
        line, = ax.plot(*decimated(run.steps["step"], run.steps["loss"]), lw=1,
                        label=_label(run, several))
        if run.val["step"]:
            ax.plot(*decimated(run.val["step"], run.val["loss"]), "o--", ms=3, lw=1,
                    color=line.get_color(), alpha=0.8, label=None if several else "validation")
        averaged = run.averaged_val
        if averaged["step"]:                         # --average: the averaged weights' loss
            ax.plot(averaged["step"], averaged["loss"], "s:", ms=3, lw=1.2,
                    color=line.get_color() if several else "tab:purple",
                    label=f"{run.info.id} val (averaged)" if several else "val (averaged)")
    if not several:
        for step, command in runs[0].switches:
            ax.axvline(step, color="tab:orange", lw=0.8, ls=":")
            ax.annotate(command, (step, 1), xycoords=("data", "axes fraction"), rotation=90,
                        va="top", ha="right", fontsize=7, color="tab:orange")
    losses = [v for r in runs for v in r.steps["loss"] if v is not None and v > 0]
    if losses and max(losses) / min(losses) > 100:
        ax.set_yscale("log")
    ax.set(xlabel="step", ylabel="loss", title="Loss")
    ax.legend(loc="upper right", fontsize=7)
    return svg_of(fig)


@styled
def grad_chart(runs: list[RunData]) -> str:
    """Global gradient norm before and after clipping, the threshold, clip events."""
    fig, ax = new_figure()
    several = len(runs) > 1
    for run in runs:
        label = _label(run, several) if several else "before clip"
        line, = ax.plot(*decimated(run.steps["step"], run.steps["grad_norm"]), lw=1, label=label)
        if not several:
            ax.plot(*decimated(run.steps["step"], run.steps["grad_norm_clipped"]), lw=1,
                    label="after clip")
            if run.clips["step"]:                   # decimated too: a run can clip 100k times
                ax.scatter(*decimated(run.clips["step"], run.clips["grad_norm"]), s=4,
                           color="tab:red", label=f"clip events ({len(run.clips['step'])})",
                           zorder=3)
                ax.plot(*decimated(run.clips["step"], run.clips["threshold"]), color="tab:red",
                        lw=0.8, ls="--", label="threshold")
    ax.set_yscale("log")
    ax.set(xlabel="step", ylabel="L2 norm", title="Gradient norm")
    ax.legend(loc="upper right", fontsize=7)
    return svg_of(fig)


@styled
def saved_bytes_chart(run: RunData) -> str:
    """Bytes autograd saved for backward, per module, at the latest sample."""
    layers = run.latest("LayerStats")
    saved = layers["saved_bytes"] if layers else {}
    fig, ax = new_figure(max(2.0, 0.22 * len(saved) + 1.0))
    names = list(saved)
    ax.barh(names, [saved[n] / 2**20 for n in names], color="tab:purple")
    ax.invert_yaxis()                                # module order, top to bottom
    ax.set(xlabel="MiB saved for backward",
           title=f"Saved activations per module (step {layers['step']})" if layers else
           "Saved activations per module")
    ax.tick_params(axis="y", labelsize=7)
    return svg_of(fig)


@styled
def memory_chart(run: RunData) -> str:
    """Parameters, gradients, optimizer state and activations over the run."""
    fig, ax = new_figure()
    samples = run.samples["MemorySample"]
    steps = [m["step"] for m in samples]
    ax.stackplot(steps, *[[m[p] / 2**20 for m in samples] for p in MEMORY_PARTS],
                 labels=[LABELS[p] for p in MEMORY_PARTS], alpha=0.85)
    ax.set(xlabel="step", ylabel="MiB", title="Memory breakdown")
    ax.legend(loc="upper left", fontsize=7)
    return svg_of(fig)


@styled
def flops_chart(run: RunData) -> str:
    """FLOPs per module, forward and backward, for one step."""
    table = run.latest("FlopTable")
    rows = list(table["per_module"].items()) if table else []
    fig, ax = new_figure(max(2.0, 0.3 * len(rows) + 1.0))
    names = [n for n, _ in rows]
    ys = range(len(rows))
    ax.barh([y - 0.2 for y in ys], [f / 1e6 for _, (f, _b) in rows], height=0.4, label="forward")
    ax.barh([y + 0.2 for y in ys], [b / 1e6 for _, (_f, b) in rows], height=0.4, label="backward")
    ax.set_yticks(list(ys), names, fontsize=7)
    ax.invert_yaxis()
    ax.set(xlabel="MFLOPs per step", title="FLOPs per module")
    ax.legend(loc="lower right", fontsize=7)
    return svg_of(fig)


@styled
def phases_chart(run: RunData) -> str:
    """Step time split into data, forward, backward and optimizer, per sampled step."""
    samples = run.samples["TimingSample"]
    fig, ax = new_figure()
    phases = list(samples[0]["phases"]) if samples else []
    steps = [str(s["step"]) for s in samples]
    bottom = [0.0] * len(samples)
    for phase in phases:
        ms = [s["phases"].get(phase, 0.0) * 1e3 for s in samples]
        ax.bar(steps, ms, bottom=bottom, label=phase)
        bottom = [b + m for b, m in zip(bottom, ms)]
    if len(steps) > 12:
        ax.set_xticks(steps[:: len(steps) // 12 + 1])
    ax.set(xlabel="sampled step", ylabel="ms", title="Step time by phase")
    ax.legend(loc="upper right", fontsize=7)
    return svg_of(fig)


@styled
def system_chart(run: RunData) -> str:
    """CPU % and the trainer's resident memory over the run."""
    samples = run.samples["SystemSample"]
    fig, ax = new_figure()
    steps = [s["step"] for s in samples]
    ax.plot(steps, [_nan_if_none(s["sample"].get("cpu_percent")) for s in samples], label="CPU %")
    ax.plot(steps, [_nan_if_none(s["sample"].get("process_cpu_percent")) for s in samples],
            label="trainer CPU %")
    for g in range(max((len(s["sample"].get("gpus") or []) for s in samples), default=0)):
        ax.plot(steps, [_nan_if_none(_gpu(s, g).get("util_percent")) for s in samples],
                label=f"GPU{g} util %")
    ax.set(xlabel="step", ylabel="%", title="System load")
    rss = ax.twinx()
    rss.plot(steps, [_nan_if_none(s["sample"].get("rss_bytes")) / 2**20 for s in samples],
             color="gray",
             ls="--", label="trainer RSS")
    rss.set_ylabel("trainer RSS (MiB)")
    rss.ticklabel_format(axis="y", useOffset=False)
    ax.legend(loc="upper left", fontsize=7)
    return svg_of(fig)


@styled
def ranks_chart(runs: list[RunData]) -> str:
    """Per rank, mean compute, comm and wait per sampled step, stacked: one bar per rank."""
    several = len(runs) > 1
    bars = []                                        # (label, rank means, slowest?)
    for run in runs:
        samples = run.samples["DistSample"]
        slowest = slowest_rank(samples)
        for k in rank_means(samples):
            label = f"rank {k['rank']}"
            if several:
                label = f"{run.info.id} ({samples[-1]['sync']}), {label}"
            bars.append((label, k, k["rank"] == slowest))
    fig, ax = new_figure(max(2.0, 0.35 * len(bars) + 1.2))
    ys = range(len(bars))
    left = [0.0] * len(bars)
    for key, name, color in RANK_PARTS:
        ms = [(k[key] or 0.0) * 1e3 for _, k, _ in bars]
        ax.barh(list(ys), ms, left=left, color=color, label=name)
        left = [a + b for a, b in zip(left, ms)]
    for y, (_, _, slow) in zip(ys, bars):
        if slow:
            ax.annotate(" slowest", (left[y], y), va="center", fontsize=7)
    ax.set_yticks(list(ys), [label for label, _, _ in bars], fontsize=7)
    ax.invert_yaxis()                                # rank 0 on top
    ax.margins(x=0.12)                               # room for the "slowest" mark
    ax.set(xlabel="ms per step (mean over the sampled steps)",
           title="Time per rank: compute, comm, wait" + (
               "" if several else f" ({len(runs[0].samples['DistSample'])} sampled steps)"))
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)   # beside the bars
    return svg_of(fig)


def _gpu(sample: dict, index: int) -> dict:
    gpus = sample["sample"].get("gpus") or []
    return gpus[index] if index < len(gpus) else {}


def charts(runs: list[RunData]) -> list[tuple[str, str]]:
    """(title, svg) of every chart the data supports: overlays for several runs."""
    out = [("Loss", loss_chart(runs)), ("Gradient norm", grad_chart(runs))]
    parallel = [r for r in runs if r.samples["DistSample"]]
    if parallel:
        out.append(("Time per rank", ranks_chart(parallel)))
        held = [r for r in parallel if held_by_rank(r.samples["DistSample"])]
        if held:
            out.append(("Memory per rank", styled(memory_per_rank_chart)(held, new_figure,
                                                                          svg_of)))
    if len(runs) > 1:
        return out
    run = runs[0]
    if run.samples["LayerStats"]:
        out.append(("Saved activations per module", saved_bytes_chart(run)))
    if run.samples["MemorySample"]:
        out.append(("Memory breakdown", memory_chart(run)))
    if run.samples["FlopTable"]:
        out.append(("FLOPs per module", flops_chart(run)))
    if run.samples["TimingSample"]:
        out.append(("Step time by phase", phases_chart(run)))
    if run.samples["SystemSample"]:
        out.append(("System load", system_chart(run)))
    return out
