"""--noise-scale-every K: the gradient noise scale B_simple against the batch size in use, with
what that batch costs against the ideal (McCandlish et al. 2018; profilers/noise.py), and a
sparkline of B_simple over the run (it grows as the loss falls)."""

from __future__ import annotations

from rich.text import Text
from textual.containers import Vertical
from textual.widgets import Sparkline, Static

from lsml_tui.profilers.noise import batch_tradeoff
from lsml_tui.trainer.events import NoiseSample

HISTORY = 200       # the sparkline's bars: the latest measurements


def verdict(noise_scale: float, batch: int) -> str:
    """What B_simple says about this batch, in a user's words."""
    if batch < noise_scale / 2:
        return "a larger batch (or more workers) still cuts the steps almost in proportion"
    if batch > 2 * noise_scale:
        return "past the noise scale: more examples per step buy few fewer steps"
    return "near the noise scale: the balance between steps and examples"


def describe(s: NoiseSample) -> Text:
    if s.noise_scale is None:
        return Text(f"batch {s.batch}: no estimate yet (the first estimates of |G|² can be "
                    f"negative); {s.seconds:.2g} s per measurement")
    steps, examples = batch_tradeoff(s.noise_scale, s.batch)
    out = Text()
    out.append(f"B_simple {s.noise_scale:.3g}", style="bold")
    out.append(f" vs batch {s.batch} ({s.batch / s.noise_scale:.2g}x)\n")
    out.append(f"this batch: {steps:.2g}x the fewest steps, {examples:.2g}x the fewest examples\n")
    out.append(verdict(s.noise_scale, s.batch), style="italic")
    out.append(f"\nparts of {s.part}; {s.seconds:.2g} s per measurement", style="dim")
    return out


class NoiseScalePanel(Vertical):
    DEFAULT_CLASSES = "panel"   # the app hands every panel each event

    def __init__(self, every: int | None = None, **kw):
        super().__init__(**kw)
        self.border_title = "Gradient noise scale"
        self.every = every
        self.history: list[float] = []
        self.last: NoiseSample | None = None
        self.dirty = True

    def compose(self):
        yield Static(f"waiting for the first measurement (every {self.every or 'K'} steps) …",
                     id="noise-text")
        yield Sparkline([], id="noise-history")

    def add(self, e) -> None:
        if isinstance(e, NoiseSample):
            self.last = e
            if e.noise_scale is not None:
                self.history = (self.history + [e.noise_scale])[-HISTORY:]
            self.dirty = True

    def redraw(self) -> None:
        if self.last is not None:
            self.query_one("#noise-text", Static).update(describe(self.last))
            self.query_one(Sparkline).data = list(self.history)
            self.border_subtitle = "B_simple over the run"
        self.dirty = False
