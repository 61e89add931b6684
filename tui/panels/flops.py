"""FLOPs: per-module table (forward, backward, share), per-step totals, FLOP/s and MFU."""

from __future__ import annotations

from textual.containers import Vertical
from textual.widgets import DataTable, Static

from lsml_tui.trainer.events import FlopTable, RunStarted, TimingSample
from lsml_tui.tui.format import si


class FlopsPanel(Vertical):
    DEFAULT_CLASSES = "panel"   # the app hands every panel each event

    def __init__(self, **kw):
        super().__init__(**kw)
        self.border_title = "FLOPs per step"
        self.table: FlopTable | None = None
        self.timing: TimingSample | None = None
        self.mode = ""                  # MFU is against this math mode's peak
        self.dirty = True

    def compose(self):
        yield Static("counting…", id="flops-totals")
        yield DataTable(id="flops-table", show_cursor=False, zebra_stripes=True)

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns("module", "forward", "backward", "bwd/fwd", "share")

    def add(self, e) -> None:
        if isinstance(e, FlopTable):
            self.table = e
        elif isinstance(e, TimingSample):
            self.timing = e
        elif isinstance(e, RunStarted):
            self.mode = e.precision
        else:
            return
        self.dirty = True

    def redraw(self) -> None:
        t = self.table
        if t is not None:
            rate = self.timing.flops_per_second if self.timing else None
            mfu = self.timing.mfu if self.timing else None
            of = f" of {self.mode} peak" if self.mode and mfu is not None else ""
            self.query_one("#flops-totals", Static).update(
                f"fwd {si(t.forward)}  bwd {si(t.backward)}  (bwd/fwd {t.backward / t.forward:.2f})\n"
                f"achieved {si(rate, 'FLOP/s')}  MFU {'N/A' if mfu is None else f'{mfu:.1%}'}{of}")
            table = self.query_one(DataTable)
            table.clear()
            total = t.forward + t.backward
            rows = sorted(t.per_module.items(), key=lambda kv: -(kv[1][0] + kv[1][1]))
            for name, (f, b) in rows:
                table.add_row(name, si(f), si(b), f"{b / f:.2f}" if f else "-",
                              f"{(f + b) / total:.1%}")
        self.dirty = False
