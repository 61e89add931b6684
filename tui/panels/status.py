"""The status line: model, optimizer, norm, LR, weight decay and dropout (when on), step,
steps/s, device, run id."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from lsml_tui.trainer.events import (CommandApplied, Diverged, OutOfMemory, RunFailed, RunFinished,
                                     RunStarted, StepMetrics)


class StatusLine(Static):
    DEFAULT_CLASSES = "panel"   # the app hands every panel each event

    def __init__(self, cfg, **kw):
        super().__init__(**kw)
        # data parallel: 'x2 ps' after the device (the global batch is N times --batch-size)
        self.ranks = f"x{cfg.workers} {cfg.sync}  " if getattr(cfg, "workers", 1) > 1 else ""
        mode = getattr(cfg, "compile", "off")
        self.compiled = f"compiled ({mode})  " if mode != "off" else ""
        self.state = {"model": cfg.model, "optimizer": cfg.optimizer, "norm": cfg.norm,
                      "lr": cfg.lr, "step": 0, "rate": 0.0, "device": "…", "precision": "", "run": "starting",
                      "status": "starting trainer",
                      "weight_decay": getattr(cfg, "weight_decay", None),
                      "dropout": getattr(cfg, "dropout", None)}
        self._window: list[tuple[int, float]] = []
        self.dirty = True

    def add(self, e) -> None:
        s = self.state
        if isinstance(e, StepMetrics):
            s["step"], s["lr"] = e.step + 1, e.lr
            self._window = (self._window + [(e.step, e.time)])[-50:]
            (a, ta), (b, tb) = self._window[0], self._window[-1]
            s["rate"] = (b - a) / (tb - ta) if tb > ta else s["rate"]
            if s["status"] == "starting trainer":
                s["status"] = "training"
        elif isinstance(e, RunStarted):
            s["device"], s["precision"], s["run"] = e.device, e.precision, e.run_id
        elif isinstance(e, CommandApplied):
            for key in ("optimizer", "norm", "weight_decay", "dropout"):
                if key in e.changes:
                    s[key] = e.changes[key]
            if "paused" in e.changes:
                s["status"] = "paused" if e.changes["paused"] else "training"
        elif isinstance(e, RunFinished):
            s["status"] = e.status
        elif isinstance(e, RunFailed):
            s["status"] = "failed"
        elif isinstance(e, Diverged) and e.action == "pause":
            s["status"] = "diverged: paused"
        elif isinstance(e, OutOfMemory):
            s["status"] = "out of memory: paused"
        else:
            return
        self.dirty = True

    def set_status(self, status: str) -> None:
        """Say what the app knows and the trainer cannot (it crashed)."""
        self.state["status"] = status
        self.dirty = True

    def redraw(self) -> None:
        s = self.state
        regular = "".join(f"{name} {s[key]:g}  " for key, name in (("weight_decay", "wd"),
                                                                   ("dropout", "dropout"))
                          if s[key])                # shown when on
        self.update(Text.assemble(
            (s["model"], "bold"), f"  {s['optimizer']}  norm {s['norm']}  lr {s['lr']:.3g}  "
            f"{regular}"
            f"step {s['step']:,}  {s['rate']:.1f} steps/s  {s['device']} {s['precision']}  {self.ranks}"
            f"{self.compiled}",
            (s["status"], "bold"), f"  {s['run']}"))
        self.dirty = False
