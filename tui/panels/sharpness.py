"""--sharpness-every K: the top Hessian eigenvalue (preconditioned by Adam's P for adam/adamw)
against step, beside the optimizer's edge-of-stability limit as each sample recorded it."""

from __future__ import annotations

import math

from rich.text import Text
from textual.containers import Vertical
from textual.widgets import Static
from textual_plotext import PlotextPlot

from lsml_tui.trainer.events import CommandApplied, SharpnessSample
from lsml_tui.tui.series import Series

FORMULAS = {"sgd": "2/lr", "momentum": "(2+2b)/lr", "adam": "(2+2 beta1)/((1-beta1) lr)",
            "adamw": "(2+2 beta1)/((1-beta1) lr)"}
MAX_GAPS = 32       # threshold lines kept apart by spans with no limit; older ones are dropped


def num(value, spec: str = ".3g") -> str:
    return "N/A" if value is None or not math.isfinite(value) else format(value, spec)


class SharpnessPanel(Vertical):
    DEFAULT_CLASSES = "panel"   # the app hands every panel each event

    def __init__(self, every: int | None = None, optimizer: str | None = None, **kw):
        super().__init__(**kw)
        self.border_title = "Sharpness (edge of stability)"
        self.every, self.optimizer = every, optimizer
        self.sharpness = Series()
        self.limits: list[Series] = [Series()]     # a new line after each span with no limit
        self.last: SharpnessSample | None = None
        self.formula: str | None = FORMULAS.get(optimizer)
        self.dirty = True

    def compose(self):
        yield PlotextPlot(id="sharpness-plot")
        every = self.every if self.every is not None else "K"
        yield Static(f"waiting for the first measurement (every {every} steps) …",
                     id="sharpness-text")

    def add(self, e) -> None:
        if isinstance(e, CommandApplied) and e.command.split()[:1] == ["optimizer"]:
            self.optimizer = e.command.split()[-1]
            return
        if not isinstance(e, SharpnessSample):
            return
        self.last, self.formula = e, FORMULAS.get(self.optimizer)
        self.sharpness.append(e.step, e.sharpness)
        if e.threshold is None or not math.isfinite(e.threshold):
            if self.limits[-1].count:
                self.limits = (self.limits + [Series()])[-MAX_GAPS:]
        else:
            self.limits[-1].append(e.step, e.threshold)
        if e.preconditioned:
            self.border_title = "Preconditioned sharpness"
        self.dirty = True

    def redraw(self) -> None:
        plot = self.query_one(PlotextPlot)
        plt = plot.plt
        plt.clear_data()
        plt.clear_figure()
        columns = 2 * max(10, self.size.width)
        if self.sharpness.count:
            plt.plot(*self.sharpness.points(columns), marker="braille", color="blue+")
        for line in self.limits:
            if line.count:
                plt.plot(*line.points(columns), marker="braille", color="red")
        if self.last is not None:
            self.query_one("#sharpness-text", Static).update(self.summary())
            self.border_subtitle = "sharpness blue, limit red"
        self.dirty = False
        plot.refresh()

    def summary(self) -> Text:
        """The last sharpness against its limit, the ratio, and what a measurement cost."""
        s = self.last
        cost = f"{num(s.seconds, '.2g')} s per measurement"
        if s.threshold is None:
            return Text(f"sharpness {num(s.sharpness)} / no limit known for this optimizer  {cost}")
        formula = f" ({self.formula})" if self.formula else ""
        ok = s.sharpness is not None and math.isfinite(s.sharpness) and s.threshold > 0
        ratio = s.sharpness / s.threshold if ok else None
        unstable = ratio is not None and ratio > 1
        out = Text(f"sharpness {num(s.sharpness)} / limit {num(s.threshold)}{formula}  "
                   f"{'N/A' if ratio is None else format(100 * ratio, '.0f') + '%'}  {cost}",
                   style="bold red" if unstable else "")
        if unstable:
            out.append("\nabove the limit: unstable", style="bold red")
        return out
