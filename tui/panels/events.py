"""The events log: switches, warnings and errors, with steps; clipping as one line in place.

Clipping can fire on half the steps of a healthy run, so it never floods the log:
the log gets a line when a spell of clipping starts and when it stops (no clip for
``QUIET`` steps), and the panel's bottom border says, updated in place, what share of
the last ``WINDOW`` steps clipped and how large the norm got.
"""

from __future__ import annotations

from collections import deque

from rich.markup import escape
from textual.widgets import RichLog

from lsml_tui.trainer.events import (ClipEvent, CommandApplied, CommandRefused, Diverged,
                                     NonFiniteGradients, Notice, OutOfMemory, Overfitting,
                                     RecordingProblem,
                                     RunFailed, RunFinished, RunStarted, StepMetrics,
                                     TraceCaptured)
from lsml_tui.tui.format import describe

STYLES = {RunStarted: "bold", CommandApplied: "green", CommandRefused: "yellow",
          NonFiniteGradients: "yellow", Diverged: "bold red", RunFailed: "bold red",
          OutOfMemory: "bold red", RecordingProblem: "yellow",
          TraceCaptured: "cyan", Notice: "cyan", Overfitting: "bold yellow", RunFinished: "bold"}
SHOWN = tuple(STYLES)
WINDOW = 500            # steps the in-place clipping line summarises
QUIET = 100             # steps without a clip that end a spell of clipping


class ClipSpell:
    """Clipping over the recent steps: when a spell starts and stops, and its share."""

    def __init__(self):
        self.recent: deque[tuple[int, float]] = deque()   # (step, norm) within WINDOW
        self.step = -1                                    # the latest step seen
        self.started: int | None = None                   # first step of the current spell
        self.count = 0                                    # clips in the current spell

    def clip(self, step: int, norm: float, threshold: float) -> list[str]:
        """A clip event; returns the log lines it causes (a stale spell ends, a new starts)."""
        lines = [self.see(step)]
        self.recent.append((step, norm))
        self.count += 1
        if self.started is None:
            self.started = step
            lines.append(f"step {step}: clipping started (norm {norm:.3g} > {threshold:g})")
        return [line for line in lines if line]

    def see(self, step: int) -> str | None:
        """A step went by; returns a log line if it ends a spell."""
        self.step = max(self.step, step)
        while self.recent and self.recent[0][0] <= self.step - WINDOW:
            self.recent.popleft()
        last = self.recent[-1][0] if self.recent else None
        if self.started is not None and (last is None or self.step - last >= QUIET):
            line = (f"step {self.step}: clipping stopped ({self.count:,} clipped since step "
                    f"{self.started}; none in the last {QUIET} steps)")
            self.started, self.count = None, 0
            return line
        return None

    def summary(self) -> str:
        """'clipped 48% of last 500 steps, norm ≤14.4' (it fits the panel's bottom border at
        120 columns), or '' when nothing clipped in the window."""
        if not self.recent:
            return ""
        span = min(WINDOW, self.step + 1)
        share = 100 * len(self.recent) / span
        top = max(n for _, n in self.recent)
        return f"clipped {share:.0f}% of last {span} steps, norm ≤{top:.3g}"


class EventsPanel(RichLog):
    """The log. RichLog wraps a line at ``min_width`` (78 by default) whatever the panel's
    width, and the rest of the line is cut off at the border: min_width 1 wraps at the panel's
    own width, and a change of width wraps every line again."""

    DEFAULT_CLASSES = "panel"   # the app hands every panel each event

    def __init__(self, **kw):
        super().__init__(wrap=True, markup=True, max_lines=1000, min_width=1, **kw)
        self.border_title = "Events"
        self.clipping = ClipSpell()
        self.history: deque[str] = deque(maxlen=1000)   # plain text of the lines shown
        self.styles_of: deque[str] = deque(maxlen=1000)  # and the style of each
        self.wrapped_at: int | None = None              # the width the lines were wrapped to
        self.dirty = False

    def say(self, text: str, style: str = "") -> None:
        self.history.append(text)
        self.styles_of.append(style)
        self._write(text, style)

    def _write(self, text: str, style: str) -> None:
        self.write(f"[{style}]{escape(text)}[/]" if style else escape(text))

    def on_resize(self, event) -> None:
        """Wrap again at the new width (RichLog's own handler writes what came before the
        first size)."""
        width = self.scrollable_content_region.width
        if self.wrapped_at is not None and width and width != self.wrapped_at:
            self.clear()
            for text, style in zip(self.history, self.styles_of):
                self._write(text, style)
        self.wrapped_at = width or self.wrapped_at

    def add(self, e) -> None:
        if isinstance(e, ClipEvent):
            self._lines(self.clipping.clip(e.step, e.grad_norm, e.threshold))
            return
        if isinstance(e, StepMetrics):
            self._lines([self.clipping.see(e.step)])
            return
        if not isinstance(e, SHOWN):
            return
        self.say(describe(e), STYLES[type(e)])
        if isinstance(e, RunFailed):
            for line in e.traceback.rstrip().splitlines()[-12:]:
                self.say(line, "red")
            self.say("press r to start a new run", "bold")

    def _lines(self, lines: list) -> None:
        self.dirty = True                    # the in-place line moves on
        for text in filter(None, lines):
            self.say(text, "dim")

    def redraw(self) -> None:
        self.border_subtitle = self.clipping.summary()
        self.dirty = False
