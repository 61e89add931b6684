"""The events log: switches, clip events (aggregated), warnings and errors, with steps."""

from __future__ import annotations

from collections import deque

from rich.markup import escape
from textual.widgets import RichLog

from lsml_tui.trainer.events import (ClipEvent, CommandApplied, CommandRefused, Diverged,
                                     NonFiniteGradients, OutOfMemory, RecordingProblem,
                                     RunFailed, RunFinished, RunStarted, TraceCaptured)

from ..format import describe


STYLES = {RunStarted: "bold", CommandApplied: "green", CommandRefused: "yellow",
          NonFiniteGradients: "yellow", Diverged: "bold red", RunFailed: "bold red",
          OutOfMemory: "bold red", RecordingProblem: "yellow",
          TraceCaptured: "cyan", RunFinished: "bold"}
SHOWN = tuple(STYLES)


class EventsPanel(RichLog):
    DEFAULT_CLASSES = "panel"   # the app hands every panel each event

    def __init__(self, **kw):
        super().__init__(wrap=True, markup=True, max_lines=1000, **kw)
        self.border_title = "Events"
        self._clips: list[int] = []              # clip steps not yet written
        self.history: deque[str] = deque(maxlen=1000)   # plain text of the lines shown
        self.dirty = False

    def say(self, text: str, style: str = "") -> None:
        self.history.append(text)
        self.write(f"[{style}]{escape(text)}[/]" if style else escape(text))

    def add(self, e) -> None:
        if isinstance(e, ClipEvent):
            self._clips.append(e.step)
            self.dirty = True
            return
        if not isinstance(e, SHOWN):
            return
        self._flush_clips()                  # keep the log in step order
        self.say(describe(e), STYLES[type(e)])
        if isinstance(e, RunFailed):
            for line in e.traceback.rstrip().splitlines()[-12:]:
                self.say(line, "red")
            self.say("press r to start a new run", "bold")

    def _flush_clips(self) -> None:
        if self._clips:
            a, b, n = self._clips[0], self._clips[-1], len(self._clips)
            self.say(f"step {a}: clipped" if n == 1 else f"steps {a}-{b}: clipped {n} times",
                     "dim")
            self._clips = []

    def redraw(self) -> None:
        self._flush_clips()
        self.dirty = False
