"""The dashboard: layout, bindings and wiring. Panels live in ``panels/``, what the keys
do in ``actions.py``.

The trainer runs in its own process behind a ``TrainerBridge``. A timer drains
its events a few times a second, hands them to every panel, and redraws only
the panels that changed: the screen never redraws per event.
"""

from __future__ import annotations

import asyncio
import time

from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Container, Vertical
from textual.widgets import Footer

from lsml_tui.trainer.config import RunConfig
from lsml_tui.trainer.events import CommandApplied, CommandRefused, RunFinished, RunStarted
from lsml_tui.tui import lifeline
from lsml_tui.tui.actions import Actions
from lsml_tui.tui.bridge import TrainerBridge, prepare_processes, thin
from lsml_tui.tui.panels import (EventsPanel, GradientsPanel, LossPanel, MemoryPanel, StatusLine,
                                 SystemPanel)
from lsml_tui.tui.panels.output import OutputPanel
from lsml_tui.tui.panels.tabs import flops_cell

REDRAW_HZ = 2          # a few Hz: plotext builds cost CPU the trainer could use
TICK_BUDGET = 20_000   # events handed to the panels per redraw; step metrics beyond are thinned


class LsmlApp(Actions, App):
    CSS_PATH = "app.tcss"
    TITLE = "lsml-tui"
    BINDINGS = [
        Binding("o", "pick_optimizer", "optimizer", tooltip="Switch optimizer at the next step"),
        Binding("n", "pick_norm", "norm", tooltip="Switch normalization at the next step"),
        Binding("l", "set_lr", "lr", tooltip="Set the learning rate"),
        Binding("c", "set_clip", "clip", tooltip="Set the clip threshold, or off"),
        Binding("d", "set_dropout", "dropout", show=False,
                tooltip="Set the dropout probability (MLP, CNN, transformer)"),
        Binding("W", "set_weight_decay", "wd", show=False, tooltip="Set the weight decay"),
        Binding("space", "toggle_pause", "pause", tooltip="Pause or resume training"),
        Binding("s", "single_step", "step", tooltip="One step while paused"),
        Binding("w", "rewind", "rewind", show=False,
                tooltip="Rewind to the last good weights and optimizer state"),
        Binding("t", "trace", "trace", tooltip="Capture a torch.profiler trace of 5 steps"),
        Binding("e", "export", "export", tooltip="Write HTML, Markdown, JSON and CSV reports"),
        Binding("f", "lr_find", "lr find", show=False, tooltip="Learning-rate range test on a "
                "fresh copy of the model (the run pauses); offers to set the lr"),
        Binding("m", "pick_model", "model", tooltip="Restart with another model"),
        Binding("r", "restart", "restart", show=False, tooltip="Restart the trainer"),
        Binding("p", "next_tab", "tab", show=False, tooltip="The next tab of the optional "
                "panels (DDP, theory, sharpness, noise scale) and FLOPs"),
        Binding("g", "toggle_log", "log y", show=False, tooltip="Loss on a log scale"),
        Binding("v", "toggle_smooth", "EMA", show=False, tooltip="Smooth the training loss"),
        Binding("question_mark", "help", "help", key_display="?"),
        Binding("q", "quit", "quit"),
        Binding("ctrl+c", "quit", "quit", show=False, priority=True),
    ]

    def __init__(self, cfg: RunConfig, bridge_factory=TrainerBridge, replay_of: str | None = None):
        super().__init__()
        prepare_processes(trainer=bridge_factory is TrainerBridge and replay_of is None)
        self.cfg = cfg
        self.bridge_factory = bridge_factory   # tests and benchmarks feed synthetic events
        self.bridge: TrainerBridge | None = None
        self.final: RunFinished | None = None
        self.run_dir: str | None = replay_of
        self.read_only = replay_of is not None  # a recorded run: nothing to command
        self.following = False      # a live run started elsewhere, commanded through its store
        self.script: str | None = None  # lsml-tui run: the user's script this app started
        self.watched = False        # a run of the user's own loop (lsml_tui.watch)
        self._replay_done = False
        self.return_signal: int | None = None
        self._quitting = False      # a second quit (q again, a signal) leaves it to the first
        self.thinned = 0            # step metrics not drawn during a flood (all are stored)
        self._thin_told = float("-inf")
        self._crash_reported = False
        self._swapping = False      # panels are being rebuilt: the timer waits
        self.answers: dict = {}     # the trainer's answer to each command sent with a ref

    def compose(self) -> ComposeResult:
        yield StatusLine(self.cfg)
        with Container(id="panels"):
            yield LossPanel()
            yield GradientsPanel(self.cfg.clip)
            yield MemoryPanel()
            yield from flops_cell(self.cfg)     # with optional panels: they and FLOPs as tabs
            with Vertical(id="side"):
                yield SystemPanel()
                if self.script is not None:
                    yield OutputPanel(self.script)
                yield EventsPanel()
        yield Footer()

    def on_mount(self) -> None:
        if not self.is_headless:    # SIGTERM, SIGHUP, SIGINT, a hung-up terminal: as q, and
            lifeline.install()      # a deadline that does not need this loop (lifeline.py)
            lifeline.attach(self, asyncio.get_running_loop())
        if self.return_signal is None:      # signalled while starting: nothing to start
            self.start_trainer()
        self.set_interval(1 / REDRAW_HZ, self.tick)
        self.tick()

    def on_signal(self, sig: int) -> None:
        """SIGTERM, SIGHUP or SIGINT: quit as q does; the shell sees 128 + the signal."""
        if self.return_signal is None:
            self.return_signal = sig
        self.call_later(self.action_quit)

    def on_resize(self, event) -> None:
        self.screen.set_class(event.size.width < 100, "narrow")

    @property
    def panels(self) -> list:
        return list(self.query(".panel"))

    @property
    def status(self) -> str:
        return self.query_one(StatusLine).state["status"]

    @classmethod
    def replay(cls, run_dir) -> "LsmlApp":
        """The dashboard on a stored run, read-only, every panel filled from the store."""
        from lsml_tui.tui.replay import RecordedBridge, replay_config, watched
        app = cls(replay_config(run_dir), lambda cfg: RecordedBridge(cfg, run_dir),
                  replay_of=str(run_dir))
        app.watched = watched(run_dir)
        return app

    @classmethod
    def follow(cls, run_dir) -> "LsmlApp":
        """The dashboard on a run that is still going elsewhere: live, and its controls work."""
        from lsml_tui.tui.follow import FollowBridge
        from lsml_tui.tui.replay import replay_config, watched
        app = cls(replay_config(run_dir), lambda cfg: FollowBridge(cfg, run_dir))
        app.following, app.run_dir, app.watched = True, str(run_dir), watched(run_dir)
        return app

    @classmethod
    def run_script(cls, run_dir, popen, name: str) -> "LsmlApp":
        """The dashboard on the run of a script it started (lsml-tui run): live, commanded
        through the store, its output in a panel; quitting ends the script."""
        from lsml_tui.tui.follow import ScriptBridge
        from lsml_tui.tui.replay import replay_config, watched
        app = cls(replay_config(run_dir), lambda cfg: ScriptBridge(cfg, run_dir, popen))
        app.following, app.run_dir, app.watched = True, str(run_dir), watched(run_dir)
        app.script = name
        return app

    def start_trainer(self) -> None:
        self.final, self._crash_reported = None, False
        self.bridge = self.bridge_factory(self.cfg).start()
        self.query_one(EventsPanel).say(
            f"replaying {self.run_dir} (read-only) …" if self.read_only
            else f"running {self.script}; q stops it …" if self.script
            else f"following {self.run_dir}; q leaves it running …" if self.following
            else f"starting the trainer ({self.cfg.model}) …", "dim")

    def tick(self) -> None:
        """Drain the trainer's events into the panels; redraw what changed."""
        if self._swapping:
            return
        events, dropped = thin(self.bridge.drain() if self.bridge else [], TICK_BUDGET)
        self.thinned += dropped
        if self.thinned and time.monotonic() - self._thin_told > 10:   # say so, not too often
            self._thin_told = time.monotonic()
            self.query_one(EventsPanel).say(
                f"the dashboard thinned {self.thinned:,} step points to keep up; "
                f"the run store has every step", "yellow")
        panels = self.panels
        for e in events:
            if isinstance(e, RunFinished):
                self.final = e
            elif isinstance(e, RunStarted) and not (self.read_only or self.following):
                self.run_dir = e.run_dir
            elif isinstance(e, (CommandApplied, CommandRefused)) and e.ref:
                self.answers[e.ref] = e     # its sender waits for it (tuning/lrfind_screen.py)
            for panel in panels:
                panel.add(e)
        if self.bridge is not None and self.bridge.crashed and not self._crash_reported:
            self._crash_reported = True
            self.query_one(EventsPanel).say(
                f"the trainer process died (exit code {self.bridge.process.exitcode}); "
                f"what it recorded is in the run store. Press r to restart.", "bold red")
            self.query_one(StatusLine).set_status("crashed")
        if self.read_only and self.bridge.ended and not self._replay_done:
            self._replay_done = True
            self.query_one(StatusLine).set_status(f"{self.bridge.status} (replay)")
            self.query_one(EventsPanel).say(f"replay complete: run {self.bridge.status}; "
                                            f"press e for a report, q to quit", "bold")
        for panel in panels:
            if panel.dirty:
                panel.redraw()

    async def fresh_run(self, cfg: RunConfig) -> None:
        """Stop the trainer, rebuild the panels empty, start a new run of `cfg`."""
        self._swapping = True
        try:
            await self.stop_trainer()
            self.cfg = cfg
            await self.recompose()
            self.start_trainer()
        finally:
            self._swapping = False

    async def stop_trainer(self) -> None:
        """Stop the trainer (it records its final status) without blocking the UI."""
        if self.bridge is not None:
            last = await asyncio.to_thread(self.bridge.stop)
            for e in last:
                if isinstance(e, RunFinished):
                    self.final = e

    async def action_quit(self) -> None:
        if self._quitting:          # exiting now would leave the trainer to stop unwatched
            return
        self._quitting = True
        await self.stop_trainer()
        self.exit(self.final.status if self.final else None)

    def get_system_commands(self, screen):
        yield from super().get_system_commands(screen)
        for b in self.BINDINGS:
            if b.tooltip:
                yield SystemCommand(b.description.capitalize(), b.tooltip,
                                    lambda action=b.action: self.run_action(action))
