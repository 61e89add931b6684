"""--model linear: log10 ||w - w*|| against step (and, with --average, log10 ||w_avg - w*||)
beside theory's predicted line and noise ball, with L, mu, kappa, the stable-lr limit and
the theoretical vs the measured rate."""

from __future__ import annotations

import math
from collections import deque

from rich.text import Text
from textual.containers import Vertical
from textual.widgets import Static
from textual_plotext import PlotextPlot

from lsml_tui.profilers.fit import fitted_rate
from lsml_tui.trainer.events import TheoryInfo, TheorySample
from lsml_tui.tui.panels.loss import AVERAGED_COLOR
from lsml_tui.tui.series import Series

FIT_POINTS = 4096       # samples kept for the measured rate; beyond, every other one is dropped


def limit_name(i: TheoryInfo) -> str | None:
    """The stable-lr limit as a formula when it is one theory names: 2/L or (2+2b)/L."""
    if not positive(i.L):
        return None
    b = i.momentum or 0.0
    for name, value in (("2/L", 2 / i.L), ("(2+2b)/L", (2 + 2 * b) / i.L)):
        if math.isclose(i.lr_limit, value, rel_tol=1e-9):
            return name
    return None


def clip(xs, ys, lo, hi):
    """The part of the straight line from (xs[0], ys[0]) to (xs[1], ys[1]) with lo <= y <= hi."""
    (x0, x1), (y0, y1) = xs, ys
    if y0 == y1:
        return (xs, ys) if lo <= y0 <= hi else None
    a, b = sorted(((lo - y0) / (y1 - y0), (hi - y0) / (y1 - y0)))
    a, b = max(a, 0.0), min(b, 1.0)
    if a > b:
        return None
    return [x0 + a * (x1 - x0), x0 + b * (x1 - x0)], [y0 + a * (y1 - y0), y0 + b * (y1 - y0)]


def positive(value) -> bool:
    return value is not None and 0 < value < math.inf


def num(value, spec: str = "g") -> str:
    return "N/A" if value is None or not math.isfinite(value) else format(value, spec)


class TheoryPanel(Vertical):
    DEFAULT_CLASSES = "panel"   # the app hands every panel each event

    def __init__(self, **kw):
        super().__init__(**kw)
        self.border_title = "Theory: least squares"
        self.distance = Series()                    # log10 ||w - w*||
        self.averaged = Series()                    # log10 ||w_avg - w*|| (--average)
        self.info: TheoryInfo | None = None
        self.lines: deque[TheoryInfo] = deque(maxlen=64)   # each prediction, oldest first
        self.recent: list[tuple[int, float]] = []   # (step, distance) since the last info
        self.last_step: int | None = None
        self.dirty = True

    def compose(self):
        yield PlotextPlot(id="theory-plot")
        yield Static("waiting for the first step …", id="theory-text")

    def add(self, e) -> None:
        if isinstance(e, TheoryInfo):
            self.info, self.recent = e, []
            self.lines.append(e)
        elif isinstance(e, TheorySample):
            self.last_step = e.step
            if positive(e.distance):
                self.distance.append(e.step, math.log10(e.distance))
            if positive(e.distance_averaged):
                self.averaged.append(e.step, math.log10(e.distance_averaged))
            self.recent.append((e.step, e.distance))
            if len(self.recent) > FIT_POINTS:       # bounded: the fit keeps a uniform sample
                self.recent = self.recent[::-2][::-1]   # every other one, the newest kept
        else:
            return
        self.dirty = True

    def predicted(self) -> list[tuple[list[float], list[float]]]:
        """Per prediction, the ends of its straight line in log10: from its step to the next's."""
        out, infos = [], list(self.lines)
        for k, i in enumerate(infos):
            if not (positive(i.rate_theory) and positive(i.distance)):
                continue
            end = infos[k + 1].step if k + 1 < len(infos) else max(self.last_step or i.step, i.step)
            y0 = math.log10(i.distance)
            out.append(([i.step, end], [y0, y0 + (end - i.step) * math.log10(i.rate_theory)]))
        return out

    def redraw(self) -> None:
        plt = self.query_one(PlotextPlot).plt
        plt.clear_data()
        plt.clear_figure()
        if self.distance.count:
            columns = 2 * max(10, self.size.width)
            xs, ys = self.distance.points(columns)
            plt.plot(xs, ys, marker="braille")        # no legends: the plot is a few rows tall
            lo, hi = min(ys) - 1, max(ys) + 1       # a prediction far past the data: cut
            if self.averaged.count:
                ax, ay = self.averaged.points(columns)
                plt.plot(ax, ay, marker="braille", color=AVERAGED_COLOR)
                lo, hi = min(lo, min(ay) - 1), max(hi, max(ay) + 1)
            lines = [c for c in (clip(*line, lo, hi) for line in self.predicted()) if c]
            for px, py in lines:
                plt.plot(px, py, marker="braille", color="orange")
            ball = self.info.noise_ball if self.info else None
            if positive(ball):
                level = math.log10(math.sqrt(ball))
                plt.plot([xs[0], xs[-1]], [level, level], marker="braille", color="red")
                plt.text("noise ball", xs[-1], level, color="red", alignment="right")
            avg = (f", avg 10^{self.averaged.last:.3g} {AVERAGED_COLOR.rstrip('+')}"
                   if self.averaged.count else "")
            self.border_subtitle = (f"log10 ||w - w*|| {self.distance.last:.3g}{avg}, "
                                    "theory orange")
        if self.info is not None or self.recent:
            self.query_one("#theory-text", Static).update(self.summary())
        self.dirty = False
        self.query_one(PlotextPlot).refresh()

    def summary(self) -> Text:
        """L, mu, kappa, lr and its limit, and the rate theory predicts beside the measured one."""
        i, measured = self.info, num(fitted_rate(*zip(*self.recent)) if self.recent
                                              else None, ".3f")
        if i is None:
            return Text(f"rate: measured {measured}")
        name = limit_name(i) if i.lr_limit is not None else None
        limit = (f"{name} = {num(i.lr_limit)}" if name else num(i.lr_limit))
        out = Text(f"L {num(i.L)}  mu {num(i.mu)}  kappa {num(i.kappa)}  "
                   f"lr {num(i.lr)} (limit {limit})\n")
        if i.rate_theory is None:
            out.append(f"rate: measured {measured}; no linear-rate theory for {i.optimizer}")
        else:
            out.append(f"rate: theory {num(i.rate_theory, '.3f')}, measured {measured}")
        if i.lr_limit is not None and i.lr > i.lr_limit:
            out.append(f"\nunstable: lr above {name or num(i.lr_limit)}", style="bold red")
        return out
