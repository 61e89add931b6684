"""``lsml-tui lr-find``: the learning-rate range test from the command line.

Takes every run flag (the model, optimizer, norm, precision and device to test) and
the ramp's own; bad input is refused with one line and exit status 2 before torch is
imported. Prints the curve in the terminal (plotext) and the suggestion, or with
``--json`` one JSON object; writes a report (JSON, Markdown, an SVG chart and the
config tested) into ``<runs dir>/lr-find-<id>/`` or ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import sys
from pathlib import Path

from lsml_tui.trainer.config import ConfigError, to_toml
from lsml_tui.trainer.tuning.lr_find import MAX_LR, MIN_LR, NUM_STEPS, RULES, check
from lsml_tui.trainer.store.schema import json_safe, write_atomic
from lsml_tui.trainer.validate import check_out_dir, check_runs_dir
from lsml_tui.tui.flags import add_run_flags, config_from_args

FILES = ("lr_find.json", "lr_find.md", "lr_find.svg", "config.toml")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def parser(prog: str, make) -> argparse.ArgumentParser:
    p = make(prog=prog, argument_default=argparse.SUPPRESS, description="The learning-rate "
             "range test (Smith 2017): a fresh model trains one step per lr on an exponential "
             "ramp, stopping once the smoothed loss passes 4x its best; prints the loss "
             "against the lr and a suggested lr, and writes a report. Takes every run flag "
             "(--schedule, --steps and --lr do not apply: the ramp sets the lr).")
    p.add_argument("--min-lr", metavar="LR", help=f"the first lr (default {MIN_LR:g})")
    p.add_argument("--max-lr", metavar="LR", help=f"the last lr (default {MAX_LR:g})")
    p.add_argument("--num-steps", metavar="N", help=f"steps on the ramp (default {NUM_STEPS})")
    p.add_argument("--rule", metavar="RULE", help=f"how to suggest: {', '.join(RULES)} "
                   f"(default {RULES[0]}; see README)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--out", metavar="DIR", help="write the report into DIR (default: a new "
                   "lr-find-<id> directory under --runs-dir)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--parent-pid", metavar="PID", help=argparse.SUPPRESS)   # the dashboard
    return add_run_flags(p)


def _number(args, name: str, kind, default):
    if name not in args:
        return default
    text = getattr(args, name)
    try:
        return kind(text)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise ConfigError(f"--{name.replace('_', '-')} {text!r} is not {what}") from None


def _out_dir(args, cfg) -> Path:
    """Where the report goes; refused now if it cannot be written."""
    if "out" not in args:
        from lsml_tui.trainer.store.writer import new_run_id
        check_runs_dir(cfg.runs_dir)
        return Path(cfg.runs_dir) / f"lr-find-{new_run_id(cfg.model)}"
    return Path(check_out_dir(args.out))


def main(argv: list[str], prog: str, make) -> int:
    args = parser(prog, make).parse_args(argv)
    min_lr = _number(args, "min_lr", float, MIN_LR)
    max_lr = _number(args, "max_lr", float, MAX_LR)
    num_steps = _number(args, "num_steps", int, NUM_STEPS)
    rule = getattr(args, "rule", RULES[0])
    check(min_lr, max_lr, num_steps, rule)
    cfg = config_from_args(args, watched=False)
    out = _out_dir(args, cfg)
    if "parent_pid" in args:        # started by the dashboard: end with it, even if killed
        from lsml_tui.trainer.worker import on_parent_exit
        on_parent_exit(lambda: os._exit(1), _number(args, "parent_pid", int, None), 0.25)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from lsml_tui.trainer.tuning.lr_find import range_test  # (torch is imported as it runs)
    console = Console(stderr=True)
    bar = Progress(TextColumn("[bold]lr-find"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("lr {task.fields[lr]:.3g}  loss {task.fields[loss]:.4g}"),
                   console=console, transient=True,
                   disable="no_progress" in args or not console.is_terminal)
    task = bar.add_task("ramp", total=num_steps, lr=min_lr, loss=math.nan)
    try:
        with bar:
            result = range_test(cfg, min_lr, max_lr, num_steps, rule, progress=lambda i, lr, loss:
                                bar.update(task, completed=i + 1, lr=lr, loss=loss))
    except ConfigError:
        raise
    except Exception as e:  # the model could not train at all: one line, exit 1
        print(f"{prog}: failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    try:
        report = write_report(result, cfg, out)
    except OSError as e:    # the disk filled, or the directory went, since it was checked
        print(f"{prog}: cannot write the report into {out}: {e}", file=sys.stderr)
        report = None
    if "json" in args:
        print(json.dumps(as_json(result, report)), flush=True)
    else:
        width = min(120, shutil.get_terminal_size((100, 24)).columns)
        text = plot_text(result, width, 22)
        print(text if sys.stdout.isatty() else ANSI.sub("", text))
        print(summary_line(result))
        if report is not None:
            print(f"report: {report / 'lr_find.md'}")
    if result.stop_reason.startswith("interrupted"):
        return 130
    return 0 if report is not None else 1


def as_json(result, report: Path | None = None) -> dict:
    return json_safe({**result.to_dict(), "report_dir": str(report) if report else None})


def summary_line(r) -> str:
    head = (f"suggested lr {r.suggested_lr:.3g}" if r.suggested_lr is not None
            else "no suggested lr")
    return (f"{head} ({r.why}); {len(r.lrs)} steps from lr {r.min_lr:g}, {r.stop_reason}; "
            f"{r.model}, {r.optimizer}, norm {r.norm} on {r.device}")


# -- the curve: the terminal and the report ------------------------------------------

def y_top(r) -> float:
    """Where the y axis ends: the blow-up that stopped the test would flatten the rest."""
    return min(max(r.losses), 2 * max(r.smoothed[0], r.losses[0]))


def draw(plt, r) -> None:
    """Loss and smoothed loss against log10 lr on a plotext figure (the module, or a
    PlotextPlot's ``plt``), the suggestion marked."""
    plt.clear_data()
    plt.clear_figure()
    if not r.lrs:
        plt.title("no finite loss recorded: " + r.stop_reason)
        return
    xs = [math.log10(lr) for lr in r.lrs]
    plt.plot(xs, r.losses, label="loss", marker="braille", color="gray")
    plt.plot(xs, r.smoothed, label="smoothed", marker="braille", color="blue+")
    low = min(min(r.losses), min(r.smoothed))
    plt.ylim(low - 0.05 * (y_top(r) - low), y_top(r))
    if r.suggested_lr is not None:
        x = math.log10(r.suggested_lr)
        plt.vline(x, "orange")
        plt.scatter([x], [r.smoothed[r.suggestion_index]], color="red", marker="x")
    ticks = list(range(math.floor(xs[0]), math.ceil(xs[-1]) + 1))
    plt.xticks(ticks, [f"1e{k}" for k in ticks])
    plt.xlabel("learning rate (log scale)")
    plt.title("suggested lr " + (f"{r.suggested_lr:.3g}" if r.suggested_lr is not None else
                                 "none") + f" ({r.rule})")


def plot_text(r, width: int, height: int) -> str:
    import plotext as plt
    draw(plt, r)
    plt.plotsize(width, height)
    return plt.build()


def chart_svg(r) -> str:
    """The report's chart: matplotlib, inline SVG, in the report charts' style."""
    from lsml_tui.tui.report.charts import new_figure, styled, svg_of

    @styled
    def chart():
        fig, ax = new_figure(3.6)
        ax.plot(r.lrs, r.losses, lw=0.8, color="tab:gray", alpha=0.7, label="loss")
        ax.plot(r.lrs, r.smoothed, lw=1.4, color="tab:blue",
                label=f"smoothed (EMA, beta {r.beta:g}, bias-corrected)")
        if r.suggested_lr is not None:
            ax.axvline(r.suggested_lr, color="tab:orange", lw=0.8, ls=":")
            ax.plot([r.suggested_lr], [r.smoothed[r.suggestion_index]], "o", color="tab:red",
                    label=f"suggested lr {r.suggested_lr:.3g} ({r.rule})")
        if r.lrs:
            low = min(min(r.losses), min(r.smoothed))
            ax.set_ylim(low - 0.05 * (y_top(r) - low), y_top(r) * 1.02)
        ax.set_xscale("log")
        ax.set(xlabel="learning rate", ylabel="training loss",
               title=f"Learning-rate range test: {r.model}, {r.optimizer}, norm {r.norm}")
        ax.legend(loc="upper left", fontsize=7)
        return svg_of(fig)
    return chart()


def markdown(r, files: dict) -> str:
    def cell(v):
        return "N/A" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)
    every = ", ".join(f"{k} {cell(v)}" for k, v in r.suggestions.items())
    rows = [("suggested lr", r.suggested_lr), ("rule", r.why), ("every rule", every),
            ("lr at the lowest smoothed loss", r.best_lr),
            ("ramp", f"{r.min_lr:g} to {r.max_lr:g} over {r.num_steps} steps"),
            ("steps trained", len(r.lrs)), ("stopped", r.stop_reason),
            ("smoothing", f"EMA beta {r.beta:g}, bias-corrected; stop at {r.stop_factor:g}x "
                          "the best"),
            ("model", f"{r.model}, {r.optimizer}, norm {r.norm}"), ("device", r.device),
            ("seconds", r.seconds)]
    out = [f"# Learning-rate range test: {r.model}", "",
           f"![loss against learning rate]({files['svg']})", "",
           "| | |", "|---|---|", *[f"| {k} | {cell(v)} |" for k, v in rows], "",
           f"Config tested: [{files['toml']}]({files['toml']}) (rerun: `lsml-tui lr-find "
           f"--config {files['toml']}`). Every step:", "",
           "| step | lr | loss | smoothed | |", "|---|---|---|---|---|"]
    out += [f"| {i} | {lr:.4g} | {loss:.6g} | {s:.6g} | "
            f"{'suggested' if i == r.suggestion_index else ''} |"
            for i, (lr, loss, s) in enumerate(zip(r.lrs, r.losses, r.smoothed))]
    return "\n".join(out) + "\n"


def write_report(r, cfg, out: Path) -> Path:
    """Chart, Markdown, JSON and the config into `out`, each written whole or not at all."""
    out.mkdir(parents=True, exist_ok=True)
    names = dict(zip(("json", "md", "svg", "toml"), FILES))
    write_atomic(out / names["svg"], chart_svg(r))
    write_atomic(out / names["toml"], to_toml(cfg))
    write_atomic(out / names["json"], json.dumps({**as_json(r, out), "config": cfg.to_dict()},
                                                 indent=1) + "\n")
    write_atomic(out / names["md"], markdown(r, names))
    return out
