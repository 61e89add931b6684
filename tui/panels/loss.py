"""Loss against step: train (raw or EMA-smoothed), validation and, with --average, the
validation loss of the averaged weights; log-scale toggle, a marker at every step where
optimizer, norm, learning rate, clipping, dropout or weight decay changed, the best
validation (x) and, in red, the overfitting alarm."""

from __future__ import annotations

from textual.reactive import reactive
from textual_plotext import PlotextPlot

from lsml_tui.trainer.commands import SWITCHES
from lsml_tui.trainer.events import (AveragedVal, CommandApplied, Overfitting, StepMetrics,
                                     ValMetrics)
from lsml_tui.tui.series import EMA, Series

AVERAGED_COLOR = "magenta+"     # the averaged weights' series, in this panel and the theory one


class LossPanel(PlotextPlot):
    DEFAULT_CLASSES = "panel"   # the app hands every panel each event

    log_scale: reactive[bool] = reactive(False)
    smooth: reactive[bool] = reactive(True)

    def __init__(self, **kw):
        super().__init__(**kw)
        self.border_title = "Loss"
        self.train, self.train_ema, self.val = Series(), Series(), Series()
        self.averaged = Series()                    # val loss of the averaged weights (--average)
        self.heading = ""                           # the title line last drawn
        self._ema = EMA()
        self.best: tuple[int, float] | None = None
        self.gap: float | None = None
        self.markers: list[tuple[int, str]] = []   # (step, what changed)
        self.overfit: Overfitting | None = None     # the alarm, once
        self.dirty = True

    def add(self, e) -> None:
        if isinstance(e, StepMetrics):
            self.train.append(e.step, e.loss)
            self.train_ema.append(e.step, self._ema.update(e.loss))
        elif isinstance(e, ValMetrics):
            self.val.append(e.step, e.val_loss)
            if self.best is None or e.val_loss < self.best[1]:
                self.best = (e.step, e.val_loss)        # the lowest validation loss so far
            if self.train_ema.count:                    # the gap: validation minus training
                self.gap = e.val_loss - self.train_ema.last     # loss at the same step
        elif isinstance(e, AveragedVal):
            self.averaged.append(e.step, e.val_loss)
        elif isinstance(e, Overfitting):
            self.overfit = e
        elif isinstance(e, CommandApplied) and e.command.split()[0] in SWITCHES:
            self.markers.append((e.step, e.command))
        else:
            return
        self.dirty = True

    @property
    def columns(self) -> int:
        return 2 * max(10, self.size.width)      # braille: two dots per character cell

    def watch_log_scale(self) -> None:
        self.dirty = True

    def watch_smooth(self) -> None:
        self.dirty = True

    def redraw(self) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        train = self.train_ema if self.smooth else self.train
        if train.count == 0:
            plt.title("starting trainer…")
            self.refresh()
            return
        plt.plot(*train.points(self.columns), label="train (EMA)" if self.smooth else "train",
                 marker="braille")
        if self.val.count:
            plt.plot(*self.val.points(self.columns), label="val", marker="braille")
        if self.averaged.count:
            plt.plot(*self.averaged.points(self.columns), label="val (averaged)",
                     marker="braille", color=AVERAGED_COLOR)
        for step, _ in self.markers:
            plt.vline(step, "orange")
        if self.overfit is not None:                    # where the alarm said it
            plt.vline(self.overfit.step, "red")
        if self.best is not None:                       # where validation was lowest
            plt.scatter([self.best[0]], [self.best[1]], marker="x", color="green")
        plt.yscale("log" if self.log_scale else "linear")
        last = [f"train {self.train.last:.4g}"] + ([f"val {self.val.last:.4g}"] if self.val.count else [])
        if self.best is not None:
            last.append(f"best {self.best[1]:.4g}@{self.best[0]}")
        if self.gap is not None:
            last.append(f"gap {self.gap:+.3g}")
        if self.averaged.count:
            last.append(f"avg {self.averaged.last:.4g}")
        if self.overfit is not None:
            last.append(f"overfitting@{self.overfit.step}")
        self.heading = "  ".join(last) + ("  [log]" if self.log_scale else "")
        plt.title(self.heading)
        self.dirty = False
        self.refresh()
