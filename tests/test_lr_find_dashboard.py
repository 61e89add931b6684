"""The dashboard's lr range test (``f``), driven through Pilot against the real trainer
process and a real ``lsml-tui lr-find`` child."""

import asyncio
import contextlib
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from textual.widgets import OptionList

from lsml_tui.trainer import specs
from lsml_tui.trainer.config import RunConfig
from lsml_tui.trainer.validate import resolve
from lsml_tui.trainer.store.reader import open_run
from lsml_tui.tui.app import LsmlApp
from lsml_tui.tui.bridge import ReplayBridge
from lsml_tui.tui.tuning.lrfind_screen import LrFindScreen, config_now
from lsml_tui.tui.panels import EventsPanel, StatusLine
from lsml_tui.tui.screens import HELP, ChoiceScreen
from tests.conftest import alive
from tests.test_dashboard import scenario


def config(tmp_path, **changes):
    base = dict(model="mlp", layers=1, width=16, steps=10**6, sample_every=20,
                runs_dir=str(tmp_path / "runs"))
    return resolve(RunConfig(**{**base, **changes}))


def lr_find_children() -> list[psutil.Process]:
    out = []
    for p in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "lr-find" in p.cmdline():
                out.append(p)
    return out


async def until(pilot, predicate, seen: set, timeout=180.0, what="condition"):
    """Wait for `predicate`, noting every lr-find child process seen meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        seen.update(lr_find_children())
        with contextlib.suppress(Exception):    # panels are being drawn
            if predicate():
                return
        if time.monotonic() > deadline:
            log = list(pilot.app.query_one(EventsPanel).history)[-5:]
            pytest.fail(f"timed out waiting for {what}; the events panel says: {log}")
        await pilot.pause(0.1)


def applied(app, command):
    with open_run(app.run_dir) as r:
        return [e for e in r.events("CommandApplied") if e["command"] == command]


def test_f_pauses_the_run_offers_the_suggestion_and_enter_sets_the_lr(tmp_path):
    seen: set = set()

    async def body(app, pilot):
        status = app.query_one(StatusLine).state
        await until(pilot, lambda: status["step"] > 10, seen, what="steps")
        before = status["lr"]
        await pilot.press("f")                  # first: look, and keep the lr (escape)
        await until(pilot, lambda: isinstance(app.screen, LrFindScreen), seen, what="the modal")
        assert applied(app, "pause")            # the run waited while the test ran
        await pilot.press("escape")
        await until(pilot, lambda: status["status"] == "training", seen, what="the resume")
        assert len(applied(app, "resume")) == 1
        assert not [e for e in applied_all(app) if e["command"].startswith("lr ")]
        await pilot.press("f")                  # then take it (enter)
        await until(pilot, lambda: isinstance(app.screen, LrFindScreen), seen, what="the modal")
        suggested = app.screen.result.suggested_lr
        assert suggested is not None and suggested != before
        await pilot.press("enter")
        await until(pilot, lambda: applied(app, f"lr {suggested:g}"), seen, what="the new lr")
        # the trainer trains at it: the status line reads each step's lr from the trainer
        await until(pilot, lambda: status["lr"] == pytest.approx(suggested), seen,
                    what="steps at the new lr")
        await until(pilot, lambda: len(applied(app, "resume")) == 2, seen, what="resumed")
        assert any("lr range test: suggested lr" in line
                   for line in app.query_one(EventsPanel).history)

    app = scenario(config(tmp_path), body)
    assert len(seen) == 2 and not alive(seen)           # one child per test, both gone
    reports = sorted((tmp_path / "runs").glob("lr-find-*/lr_find.json"))
    assert len(reports) == 2                             # each test wrote its report
    assert app.final is not None


def applied_all(app):
    with open_run(app.run_dir) as r:
        return list(r.events("CommandApplied"))


def test_quitting_while_the_test_runs_leaves_no_lr_find_process(tmp_path):
    seen: set = set()

    async def body(app, pilot):
        await until(pilot, lambda: app.query_one(StatusLine).state["step"] > 5, seen,
                    what="steps")
        await pilot.press("f")
        await until(pilot, lambda: seen, seen, what="the lr-find child")
        await pilot.press("q")

    scenario(config(tmp_path), body)
    assert seen and not alive(seen)


def test_a_replay_refuses_f_and_the_help_and_palette_list_it(tmp_path):
    cfg = config(tmp_path)
    app = LsmlApp(cfg, bridge_factory=lambda c: ReplayBridge(c, []), replay_of=str(tmp_path))
    notes = []
    app.notify = lambda message, **kw: notes.append(message)

    async def main():
        async with app.run_test(size=(140, 42)) as pilot:
            await pilot.press("f")
            await pilot.pause(0.5)
            assert not isinstance(app.screen, LrFindScreen)
            assert not [w for w in app.workers if w.group == "lr-find"]
            assert not lr_find_children()
            assert "Lr find" in [c.title for c in app.get_system_commands(app.screen)]
    asyncio.run(main())
    assert any("read-only replay" in n for n in notes)
    assert "| `f` |" in HELP
    assert any(b.key == "f" and b.action == "lr_find" and not b.show for b in LsmlApp.BINDINGS)


def test_the_test_runs_the_optimizer_and_norm_in_use_now(tmp_path):
    cfg = config(tmp_path, optimizer="momentum", momentum=0.8, lr=0.3)
    now = config_now(cfg, "adamw", "layer")         # switched live to AdamW and layer norm
    assert (now.optimizer, now.norm) == ("adamw", "layer")
    assert now.momentum is None and now.beta1 == 0.9        # AdamW's own defaults
    assert config_now(cfg, "momentum", cfg.norm) == cfg      # nothing switched: the run's
    assert Path(now.runs_dir) == Path(cfg.runs_dir)


def test_an_lr_find_whose_dashboard_is_killed_ends_itself(tmp_path):
    """SIGKILL gives the dashboard no chance to stop its child: the child notices it has
    been handed to another parent and ends (the ``--parent-pid`` the dashboard passes)."""
    dashboard = subprocess.Popen([sys.executable, "-c", (
        "import os, subprocess, sys\n"
        "child = subprocess.Popen([sys.executable, '-m', 'lsml_tui.tui.cli', 'lr-find',"
        " '--model', 'mlp', '--width', '8', '--max-lr', '1e-3', '--num-steps', '100000',"
        f" '--runs-dir', {str(tmp_path)!r}, '--parent-pid', str(os.getpid())])\n"
        "print(child.pid, flush=True)\n"
        "child.wait()\n")], stdout=subprocess.PIPE, text=True)
    child = psutil.Process(int(dashboard.stdout.readline()))
    try:
        time.sleep(1.0)                 # it is going (100,000 steps take minutes)
        assert child.is_running() and child.status() != psutil.STATUS_ZOMBIE
        dashboard.kill()
        dashboard.wait()
        gone, _ = psutil.wait_procs([child], timeout=30)
        assert gone or not alive([child])
    finally:
        with contextlib.suppress(psutil.Error):
            child.kill()


def lr_find_running(app) -> bool:
    return any(w.group == "lr-find" and w.is_running for w in app.workers)


def answers(app, command):
    """'applied' or 'refused' for each answer the trainer gave `command`, in order."""
    with open_run(app.run_dir) as r:
        rows = r.events("CommandApplied") + r.events("CommandRefused")
    return [("applied" if e["kind"] == "CommandApplied" else "refused")
            for e in sorted(rows, key=lambda e: e["id"]) if e["command"] == command]


def test_space_then_f_at_once_the_test_follows_the_trainers_answers(tmp_path):
    """The status line says 'paused' only once the trainer answered: space then f at once
    used to read the state from before the space. The test's pause is answered, and only a
    pause the test made itself is undone after it."""
    seen: set = set()

    async def body(app, pilot):
        status = app.query_one(StatusLine).state
        await until(pilot, lambda: status["step"] > 10, seen, what="steps")
        # training: space pauses; the test's own pause is refused (already paused) ...
        await pilot.press("space", "f")
        await until(pilot, lambda: isinstance(app.screen, LrFindScreen), seen, what="the modal")
        assert status["status"] == "paused"
        await pilot.press("escape")
        await until(pilot, lambda: not lr_find_running(app), seen, what="the test's end")
        await pilot.pause(1.0)                  # a resume sent at the end is answered by now
        # ... so the user's pause stays: nothing resumed it
        assert status["status"] == "paused"
        assert answers(app, "pause") == ["applied", "refused"]
        assert answers(app, "resume") == []
        # paused: space resumes, and the test pauses the run again for itself ...
        await pilot.press("space", "f")
        await until(pilot, lambda: isinstance(app.screen, LrFindScreen), seen, what="the modal")
        assert status["status"] == "paused"     # the run waited while the test ran
        assert answers(app, "pause") == ["applied", "refused", "applied"]
        await pilot.press("escape")
        # ... and resumes it after
        await until(pilot, lambda: answers(app, "resume") == ["applied", "applied"], seen,
                    what="the test's resume")
        await until(pilot, lambda: status["status"] == "training", seen, what="training")

    scenario(config(tmp_path), body)
    assert len(seen) == 2 and not alive(seen)


def test_a_run_restarted_during_the_test_is_not_offered_its_suggestion(tmp_path):
    """m during the test: the suggestion was measured on the old model; it is not offered,
    and the new run is neither resumed nor given an lr by the old test."""
    seen: set = set()
    offered = []

    async def body(app, pilot):
        await until(pilot, lambda: app.query_one(StatusLine).state["step"] > 5, seen,
                    what="steps")
        first = app.run_dir
        await pilot.press("f")
        await until(pilot, lambda: seen, seen, what="the lr-find child")
        await pilot.press("m")
        await until(pilot, lambda: isinstance(app.screen, ChoiceScreen), seen, what="models")
        app.screen.query_one(OptionList).highlighted = list(specs.MODEL_CONFIGS).index("linear")
        await pilot.press("enter")

        def ended():                # or the offer is up (it was, before the answers counted)
            offered.append(isinstance(app.screen, LrFindScreen))
            return offered[-1] or (not lr_find_running(app) and app.run_dir != first)
        await until(pilot, ended, seen, what="the test's end and the new run")
        await pilot.pause(1.0)
        assert app.cfg.model == "linear"
        assert answers(app, "resume") == [] and not [
            e for e in applied_all(app) if e["command"].startswith("lr ")]
        said.extend(app.query_one(EventsPanel).history)

    said: list = []
    scenario(config(tmp_path), body)
    assert not any(offered)
    assert any("not offered: the run was restarted (linear)" in line for line in said)
    assert seen and not alive(seen)
