"""The script's output: what ``lsml-tui run``'s script prints, as it prints it."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import RichLog

MAX_LINES = 2000        # the whole output is in the run directory's output.log


class OutputPanel(RichLog):
    DEFAULT_CLASSES = "panel"   # the app hands every panel each event

    def __init__(self, name: str, **kw):
        # min_width 1: wrap at the panel's width (RichLog's default, 78, cuts a line there)
        super().__init__(max_lines=MAX_LINES, wrap=True, markup=False, min_width=1, **kw)
        self.border_title = f"Output of {name}"
        self.pending: list[str] = []
        self.dirty = False

    def add(self, e) -> None:
        text = getattr(e, "text", None)
        if type(e).__name__ == "ScriptOutput" and text:
            self.pending.append(text)
            self.dirty = True

    def redraw(self) -> None:
        for chunk in self.pending:
            for line in chunk.rstrip("\n").split("\n"):
                self.write(Text(line.rstrip("\r")))
        self.pending = []
        self.dirty = False
