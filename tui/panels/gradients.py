"""Gradient norms: global before/after clipping with the threshold, clip events,
and the latest per-layer norms as bars (log10)."""

from __future__ import annotations

import math

from textual.containers import Vertical
from textual_plotext import PlotextPlot

from lsml_tui.trainer.events import ClipEvent, CommandApplied, LayerStats, StepMetrics
from lsml_tui.tui.series import Series


class GradientsPanel(Vertical):
    DEFAULT_CLASSES = "panel"   # the app hands every panel each event

    def __init__(self, clip: float | None, **kw):
        super().__init__(**kw)
        self.border_title = "Gradient norm"
        self.before, self.after = Series(), Series()
        self.clip = clip
        self.clip_marks: list[tuple[int, float]] = []   # recent (step, norm) clip events
        self.clip_count = 0
        self.layer_stats: LayerStats | None = None
        self.dirty = True
        self._bars_dirty = True

    def compose(self):
        yield PlotextPlot(id="grad-global")
        yield PlotextPlot(id="grad-layers")

    def add(self, e) -> None:
        if isinstance(e, StepMetrics):
            self.before.append(e.step, e.grad_norm)
            clipped = e.clipped and self.clip is not None
            after = min(e.grad_norm, self.clip) if clipped else e.grad_norm
            self.after.append(e.step, after)
        elif isinstance(e, ClipEvent):
            self.clip_count += 1
            self.clip = e.threshold             # a watched script's own, seen as it clips
            self.clip_marks = (self.clip_marks + [(e.step, e.grad_norm)])[-200:]
        elif isinstance(e, LayerStats):
            self.layer_stats = e
            self._bars_dirty = True
        elif isinstance(e, CommandApplied) and "clip" in e.changes:
            self.clip = e.changes["clip"]
        else:
            return
        self.dirty = True

    def redraw(self) -> None:
        columns = 2 * max(10, self.size.width)
        top = self.query_one("#grad-global", PlotextPlot).plt
        top.clear_data()
        top.clear_figure()
        if self.before.count:
            top.plot(*self.before.points(columns), label="before clip", marker="braille")
            top.plot(*self.after.points(columns), label="after", marker="braille")
            if self.clip is not None:
                top.hline(self.clip, "red")
            if self.clip_marks:                   # the latest clip events, as red dots
                top.scatter([s for s, _ in self.clip_marks], [n for _, n in self.clip_marks],
                            marker="dot", color="red")
            clip = "off" if self.clip is None else f"{self.clip:g}"
            top.title(f"norm {self.before.last:.3g}  clip {clip}  clipped {self.clip_count}x")
        else:
            top.title("waiting for steps…")
        self.query_one("#grad-global", PlotextPlot).refresh()
        self.dirty = False
        if self._bars_dirty:          # the bars change only with a new sample
            self._bars_dirty = False
            self._redraw_bars()

    def _redraw_bars(self) -> None:
        plot = self.query_one("#grad-layers", PlotextPlot)
        bars = plot.plt
        bars.clear_data()
        bars.clear_figure()
        if self.layer_stats is not None:
            names = [n.removesuffix(".weight") for n in self.layer_stats.names if n.endswith("weight")]
            norms = [g for n, g in zip(self.layer_stats.names, self.layer_stats.grad_norms)
                     if n.endswith("weight")]
            logs = [math.log10(g) if g and g > 0 and math.isfinite(g) else -12 for g in norms]
            bars.bar(list(range(len(names))), logs, orientation="vertical", width=0.6)
            bars.title(f"per-layer log10 |grad|, step {self.layer_stats.step}")
            bars.xticks(list(range(len(names))), [n.split(".")[-1][:6] for n in names])
        else:
            bars.title("per-layer norms after the first sample")
        plot.refresh()
