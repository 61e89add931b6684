"""Modal screens: pick from a list, type a value, and the help screen."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Markdown, OptionList


class ChoiceScreen(ModalScreen[str | None]):
    """Pick one of `choices`; Escape cancels."""

    BINDINGS = [Binding("escape", "dismiss(None)", "cancel")]

    def __init__(self, title: str, choices: list[str], current: str | None = None):
        super().__init__()
        self.title_text, self.choices, self.current = title, choices, current

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text)
            yield OptionList(*[f"{c}  (now)" if c == self.current else c for c in self.choices])

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        if self.current in self.choices:
            options.highlighted = self.choices.index(self.current)
        options.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.choices[event.option_index])


class ValueScreen(ModalScreen[str | None]):
    """Type a value; Enter submits, Escape cancels."""

    BINDINGS = [Binding("escape", "dismiss(None)", "cancel")]

    def __init__(self, title: str, value: str = ""):
        super().__init__()
        self.title_text, self.value = title, value

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text)
            yield Input(value=self.value, select_on_focus=True)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip())


HELP = """\
# lsml-tui

Watch a network train and see what it costs. Every control is applied by the
trainer between two steps; the loss panel marks the step where it took effect.

| key | action |
|---|---|
| `o` | pick the optimizer (state carries over where it means the same) |
| `n` | pick the normalization (new norms start as identity) |
| `l` | set the learning rate |
| `c` | set the gradient-clipping threshold, or `off` |
| `d` | set the dropout probability (MLP, CNN, transformer; validation runs without it) |
| `W` | set the weight decay (decoupled for AdamW, an L2 penalty in the gradient for Adam and SGD) |
| `space` | pause / resume |
| `s` | one step while paused |
| `w` | rewind to the last good weights and optimizer state (after a divergence) |
| `t` | capture a torch.profiler trace of the next 5 steps |
| `e` | export reports (HTML, Markdown, JSON, CSV) into the run directory |
| `f` | learning-rate range test on a fresh copy of the model (the run pauses meanwhile); `enter` sets the suggested lr, `escape` keeps yours |
| `m` | restart with another model |
| `r` | restart the trainer after a crash or the end of a run |
| `g` | loss panel: log scale on/off |
| `v` | loss panel: EMA smoothing on/off |
| `p` | the next tab where a run has optional panels (DDP, theory, sharpness, noise scale; FLOPs last) |
| `?` | this help |
| `q` | quit (the trainer stops and the run is recorded) |

The command palette (`ctrl+p`) lists the same actions.
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,q", "dismiss(None)", "close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog help"):     # taller than a small terminal
            yield Markdown(HELP)
