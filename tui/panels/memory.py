"""Memory: saved-activation bytes per module as bars, and the breakdown over time."""

from __future__ import annotations

from textual.containers import Vertical
from textual_plotext import PlotextPlot

from lsml_tui.trainer.events import LayerStats, MemorySample
from lsml_tui.tui.format import nbytes
from lsml_tui.tui.series import Series

PARTS = ("param_bytes", "grad_bytes", "optimizer_state_bytes", "saved_activation_bytes")
LABELS = {"param_bytes": "params", "grad_bytes": "grads", "optimizer_state_bytes": "optimizer",
          "saved_activation_bytes": "activations"}


class MemoryPanel(Vertical):
    DEFAULT_CLASSES = "panel"   # the app hands every panel each event

    def __init__(self, **kw):
        super().__init__(**kw)
        self.border_title = "Memory"
        self.saved: dict[str, int] = {}
        self.breakdown = {part: Series(recent=500) for part in PARTS}
        self.latest: MemorySample | None = None
        self.dirty = True

    def compose(self):
        yield PlotextPlot(id="mem-layers")
        yield PlotextPlot(id="mem-breakdown")

    def add(self, e) -> None:
        if isinstance(e, LayerStats):
            self.saved = e.saved_bytes
        elif isinstance(e, MemorySample):
            self.latest = e
            for part in PARTS:
                self.breakdown[part].append(e.step, getattr(e, part) / 2**20)
        else:
            return
        self.dirty = True

    def redraw(self) -> None:
        bars = self.query_one("#mem-layers", PlotextPlot).plt
        bars.clear_data()
        bars.clear_figure()
        if self.saved:
            names = list(self.saved)
            bars.bar(list(range(len(names))), [self.saved[n] / 2**20 for n in names], width=0.6)
            bars.xticks(list(range(len(names))), [n.split(".")[-1][:6] for n in names])
            bars.title(f"saved for backward: {nbytes(sum(self.saved.values()))} (MiB per module)")
        else:
            bars.title("saved activations after the first sample")
        columns = 2 * max(10, self.size.width)
        lines = self.query_one("#mem-breakdown", PlotextPlot).plt
        lines.clear_data()
        lines.clear_figure()
        if self.latest is not None:
            for part in PARTS:
                lines.plot(*self.breakdown[part].points(columns), label=LABELS[part], marker="braille")
            total = sum(getattr(self.latest, p) for p in PARTS)
            peak = self.latest.cuda_peak_bytes
            lines.title(f"total {nbytes(total)} (MiB)" + (f"  CUDA peak {nbytes(peak)}" if peak else ""))
        for plot in self.query(PlotextPlot):
            plot.refresh()
        self.dirty = False
