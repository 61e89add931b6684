"""System load: CPU, RAM, and per GPU utilisation, memory, temperature and power."""

from __future__ import annotations

from textual.widgets import Static

from lsml_tui.trainer.events import SystemSample, TimingSample
from lsml_tui.tui.format import missing, nbytes, percent


class SystemPanel(Static):
    DEFAULT_CLASSES = "panel"   # the app hands every panel each event

    def __init__(self, **kw):
        super().__init__("waiting for the first sample…", **kw)
        self.border_title = "System"
        self.sample: dict | None = None
        self.phases: dict | None = None
        self.dirty = True

    def add(self, e) -> None:
        if isinstance(e, SystemSample):
            self.sample = e.sample
        elif isinstance(e, TimingSample):
            self.phases = e.phases
        else:
            return
        self.dirty = True

    def redraw(self) -> None:
        s = self.sample
        lines = []
        if s is not None:
            lines.append(f"CPU {percent(s.get('cpu_percent'))}  trainer {percent(s.get('process_cpu_percent'))}"
                         f"  RSS {nbytes(s.get('rss_bytes'))}  RAM {percent(s.get('ram_used_percent'))}")
            gpus = s.get("gpus") or []
            if not gpus:
                lines.append("GPU: N/A (no GPU found or NVML unavailable)")
            for g in gpus:
                temp = "N/A" if missing(g.get("temperature_c")) else f"{g['temperature_c']:.0f}°C"
                power = "N/A" if missing(g.get("power_w")) else f"{g['power_w']:.0f} W"
                lines.append(f"GPU{g['index']} {g['name'][:18]}  util {percent(g.get('util_percent'))}"
                             f"  mem {nbytes(g.get('memory_used_bytes'))}/"
                             f"{nbytes(g.get('memory_total_bytes'))}  {temp}  {power}")
        if self.phases:
            total = sum(self.phases.values()) or 1.0
            lines.append("step: " + "  ".join(f"{k} {v / total:.0%}" for k, v in self.phases.items()))
        if lines:
            self.update("\n".join(lines))
        self.dirty = False
