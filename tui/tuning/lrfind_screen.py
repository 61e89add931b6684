"""The dashboard's learning-rate range test (``f``): ``lsml-tui lr-find --json`` on a fresh
copy of the model in a child process, the run paused meanwhile, then a modal with the
curve and the suggestion that sets the lr as ``l`` does.

The child is a separate interpreter (torch stays out of the UI process); it is killed
if the dashboard quits while it runs, and it ends itself if the dashboard dies.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.css.query import NoMatches
from textual.screen import ModalScreen
from textual.widgets import Label, Static
from textual_plotext import PlotextPlot

from lsml_tui.trainer import commands as C
from lsml_tui.trainer.config import ConfigError, RunConfig, to_toml
from lsml_tui.trainer.events import CommandApplied
from lsml_tui.trainer.tuning.lr_find import RangeTest
from lsml_tui.trainer.validate import check_lr, resolve
from lsml_tui.tui.panels import EventsPanel, StatusLine
from lsml_tui.tui.tuning.lrfind import draw, summary_line

OPTIMIZER_FIELDS = ("lr", "weight_decay", "momentum", "beta1", "beta2", "svrg_every")
REFS = itertools.count(1)    # the refs of the test's own pause and resume


class LrFindFailed(Exception):
    """The range test could not run: the child's last line of stderr."""


def config_now(cfg: RunConfig, optimizer: str, norm: str) -> RunConfig:
    """The run's config with the optimizer and norm in use now (they may have been switched
    live), so the suggestion is for what trains; the model starts from the run's seed."""
    values = cfg.to_dict()
    if optimizer != cfg.optimizer:              # its own defaults, as a live switch takes them
        values.update({k: None for k in OPTIMIZER_FIELDS}, optimizer=optimizer)
    values["norm"] = norm
    return resolve(RunConfig(**values))


def result_from_json(data: dict) -> RangeTest:
    names = {f.name for f in dataclasses.fields(RangeTest)}
    return RangeTest(**{k: v for k, v in data.items() if k in names})


async def run_lr_find(cfg: RunConfig) -> tuple[RangeTest, str]:
    """(the test's result, its report directory), from a child process read on a thread;
    cancelled (the dashboard is quitting), the child is killed and reaped first."""
    with tempfile.TemporaryDirectory(prefix="lsml-lr-find-") as tmp:
        config = Path(tmp) / "config.toml"
        config.write_text(to_toml(cfg))
        proc = subprocess.Popen(
            [sys.executable, "-m", "lsml_tui.tui.cli", "lr-find", "--json", "--no-progress",
             "--parent-pid", str(os.getpid()), "--config", str(config)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = await asyncio.to_thread(proc.communicate)
        except BaseException:
            proc.kill()         # SIGKILL: gone at once, so waiting for it here is short
            proc.wait()
            raise
    if proc.returncode != 0:
        lines = err.decode(errors="replace").strip().splitlines() or [
            f"exit status {proc.returncode}"]
        raise LrFindFailed(lines[-1])
    data = json.loads(out.decode().strip().splitlines()[-1])
    return result_from_json(data), data["report_dir"]


async def answer(app, run, cmd, timeout: float = 60.0):
    """Send `cmd` (which has a ref) to the trainer of `run` and wait for the trainer's answer
    to it: a CommandApplied or CommandRefused, or None if that trainer ended or was replaced
    first (or said nothing in `timeout` seconds)."""
    app.send(cmd)
    deadline = asyncio.get_running_loop().time() + timeout
    while cmd.ref not in app.answers:
        if not same_run(app, run) or asyncio.get_running_loop().time() > deadline:
            return None
        await asyncio.sleep(0.05)
    return app.answers.pop(cmd.ref)


def same_run(app, run) -> bool:
    """The trainer `run` is still the app's and still training (m and r start another)."""
    return (app.bridge is run and run is not None and run.process.is_alive()
            and app.final is None)


def changed(app, run, cfg: RunConfig) -> str | None:
    """Why the suggestion for `cfg` no longer fits the run, or None if it still does: read
    from the trainer's answers (a switch is in the status line once the trainer applied it)."""
    if app.bridge is not run:
        return f"the run was restarted ({app.cfg.model}) during the test"
    now = app.query_one(StatusLine).state
    for key in ("optimizer", "norm"):
        if now[key] != getattr(cfg, key):
            return f"the {key} was switched to {now[key]} during the test"
    return None


async def find_and_offer(app) -> None:
    """The ``f`` key's work, as a worker of `app`: pause, test, offer, resume.

    What the run is doing is read from the trainer's answers, not from the status line
    (which does not yet show a command sent a moment before): the test's own pause, with a
    ref, is answered "paused" (then the test resumes the run after) or "already paused" (the
    user's pause: the run stays paused); the config is read once every command sent before
    it has been answered; and a suggestion for a run that was switched or restarted meanwhile
    is not offered."""
    run = app.bridge
    paused_here = False
    if same_run(app, run):
        reply = await answer(app, run, C.Pause(ref=f"lr-find-{next(REFS)}"))
        paused_here = isinstance(reply, CommandApplied)
    if app.bridge is not run:           # m or r before the trainer answered: nothing to test
        say(app, "lr range test not run: the run was restarted", "yellow")
        return
    status = app.query_one(StatusLine).state
    try:
        cfg = config_now(app.cfg, status["optimizer"], status["norm"])
    except ConfigError as e:
        app.notify(f"lr range test refused: {e}", severity="error")
        cfg = None
    if cfg is not None:
        await test_and_offer(app, run, cfg, paused_here)
    if paused_here and same_run(app, run):
        await answer(app, run, C.Resume(ref=f"lr-find-{next(REFS)}"))


def say(app, text: str, style: str) -> None:
    """A line in the events panel there is now (m rebuilds the panels during a test)."""
    try:
        app.query_one(EventsPanel).say(text, style)
    except NoMatches:                   # being rebuilt this moment
        app.notify(text)


async def test_and_offer(app, run, cfg: RunConfig, paused_here: bool) -> None:
    say(app, f"lr range test on a fresh {cfg.model} ({cfg.optimizer}, norm {cfg.norm}) …"
            + ("; the run is paused meanwhile" if paused_here else ""), "cyan")
    app.notify("lr range test running" + (" (run paused)" if paused_here else ""))
    try:
        result, report = await run_lr_find(cfg)
    except (LrFindFailed, OSError, ValueError) as e:
        say(app, f"lr range test failed: {e}", "bold red")
        app.notify(f"lr range test failed: {e}", severity="error")
        return
    say(app, f"lr range test: {summary_line(result)}; report in {report}", "cyan")
    why, verb = changed(app, run, cfg), "not offered"
    if why is None:
        lr = app.query_one(StatusLine).state["lr"]
        accept = await app.push_screen_wait(LrFindScreen(result, lr, report))
        if not accept or result.suggested_lr is None:
            return
        why, verb = changed(app, run, cfg), "not set"   # m, o or n while it was offered
    if why is not None:
        say(app, f"lr range test: its suggestion is {verb}: {why}; press f to test what "
                f"trains now", "yellow")
        return
    try:                                # as the l key sets it
        check_lr(result.suggested_lr)
        app.send(C.SetLR(result.suggested_lr))
    except ConfigError as e:
        app.notify(str(e), severity="error")


class LrFindScreen(ModalScreen[bool]):
    """The range test's curve and suggestion; enter or y sets the lr, escape or n keeps it."""

    BINDINGS = [Binding("enter,y", "accept", "set lr"),
                Binding("escape,n", "dismiss(False)", "keep lr")]

    def __init__(self, result: RangeTest, current_lr: float, report: str = ""):
        super().__init__()
        self.result, self.current_lr, self.report = result, current_lr, report

    def compose(self) -> ComposeResult:
        r = self.result
        with Vertical(classes="dialog lrfind"):
            yield Label(f"Learning-rate range test: {r.model}, {r.optimizer}, norm {r.norm}")
            yield PlotextPlot(id="lrfind-plot")
            yield Static(summary_line(r) + (f"\nreport: {self.report}" if self.report else ""),
                         id="lrfind-text")
            yield Label(f"enter / y: set lr {r.suggested_lr:.3g} (now {self.current_lr:.3g})   "
                        f"escape / n: keep it" if r.suggested_lr is not None
                        else "no suggestion; escape: close", id="lrfind-keys")

    def on_mount(self) -> None:
        plot = self.query_one(PlotextPlot)
        draw(plot.plt, self.result)
        plot.refresh()

    def action_accept(self) -> None:
        self.dismiss(self.result.suggested_lr is not None)
