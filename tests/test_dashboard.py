"""The dashboard driven through Pilot, with the real trainer process and run store."""

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import pytest
from textual.css.query import NoMatches

from lsml_tui.trainer.config import RunConfig
from lsml_tui.trainer.validate import resolve
from lsml_tui.trainer.store.reader import open_run
from lsml_tui.tui.app import TICK_BUDGET, LsmlApp
from lsml_tui.tui.panels import EventsPanel, FlopsPanel, LossPanel, MemoryPanel, StatusLine
from lsml_tui.tui.screens import ChoiceScreen, HelpScreen, ValueScreen


def config(tmp_path, **changes):
    base = dict(model="mlp", layers=1, width=16, steps=10**6, sample_every=20,
                runs_dir=str(tmp_path / "runs"))
    return resolve(RunConfig(**{**base, **changes}))


def scenario(cfg, body, size=(140, 42)):
    """Run `body(app, pilot)` against a live dashboard; always stop the trainer."""
    async def main():
        app = LsmlApp(cfg)
        async with app.run_test(size=size) as pilot:
            try:
                await body(app, pilot)
            finally:
                await app.stop_trainer()
        return app
    return asyncio.run(main())


async def until(pilot, predicate, timeout=90.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not holds(predicate):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await pilot.pause(0.1)


def holds(predicate) -> bool:
    try:
        return predicate()
    except NoMatches:          # panels are being rebuilt for a new run
        return False


def status(app):
    return app.query_one(StatusLine).state


def applied(app, command):
    with open_run(app.run_dir) as r:
        return [e for e in r.events("CommandApplied") if e["command"] == command]


async def pick(pilot, app, key, choice):
    await pilot.press(key)
    await until(pilot, lambda: isinstance(app.screen, ChoiceScreen), what="the picker")
    screen = app.screen
    index = screen.choices.index(choice)
    from textual.widgets import OptionList
    options = screen.query_one(OptionList)
    steps = index - (options.highlighted or 0)
    await pilot.press(*(["down"] * steps if steps > 0 else ["up"] * -steps), "enter")


async def type_value(pilot, app, key, text):
    await pilot.press(key)
    await until(pilot, lambda: isinstance(app.screen, ValueScreen), what="the value box")
    await pilot.press(*list(text), "enter")   # the current value is selected: typing replaces it


def test_panels_fill_from_the_live_trainer(tmp_path):
    async def body(app, pilot):
        await until(pilot, lambda: status(app)["step"] > 60, what="60 steps")
        await until(pilot, lambda: app.query_one(MemoryPanel).latest is not None, what="a sample")
        await pilot.pause(0.5)
        assert app.query_one(LossPanel).train.count > 60
        flops = app.query_one(FlopsPanel).table
        # 2 * B * (32*16 + 16*10) forward FLOPs for the 1-layer MLP at batch 128
        assert flops is not None and flops.forward == 2 * 128 * (32 * 16 + 16 * 10)
        assert status(app)["device"] == "cpu" and status(app)["status"] == "training"
        assert status(app)["precision"] == "fp32"                 # auto on a CPU
        assert app.query_one(FlopsPanel).mode == "fp32"           # MFU against the fp32 peak
        assert any(line.startswith("run ") for line in app.query_one(EventsPanel).history)
    scenario(config(tmp_path, device="cpu"), body)      # the device the status line must name


def test_every_live_control_reaches_the_trainer_store_and_loss_markers(tmp_path):
    async def body(app, pilot):
        await until(pilot, lambda: status(app)["step"] > 20, what="steps")
        await pick(pilot, app, "o", "adamw")
        await until(pilot, lambda: status(app)["optimizer"] == "adamw", what="adamw")
        await pick(pilot, app, "n", "layer")
        await until(pilot, lambda: status(app)["norm"] == "layer", what="layer norm")
        await type_value(pilot, app, "l", "0.0123")
        await until(pilot, lambda: any("lr 0.0123" in m for _, m in app.query_one(LossPanel).markers),
                    what="the lr marker")
        await type_value(pilot, app, "c", "off")
        await until(pilot, lambda: any(m == "clip off" for _, m in app.query_one(LossPanel).markers),
                    what="the clip marker")
        await type_value(pilot, app, "d", "0.2")
        await type_value(pilot, app, "W", "0.05")
        await until(pilot, lambda: any(m == "weight decay 0.05"
                                       for _, m in app.query_one(LossPanel).markers),
                    what="the weight decay marker")
        assert (status(app)["dropout"], status(app)["weight_decay"]) == (0.2, 0.05)
        assert "wd 0.05  dropout 0.2" in str(app.query_one(StatusLine).render())
        markers = dict((m, s) for s, m in app.query_one(LossPanel).markers)
        for command in ("optimizer adamw", "norm layer", "lr 0.0123", "clip off", "dropout 0.2",
                        "weight decay 0.05"):
            stored, = applied(app, command)
            assert stored["step"] == markers[command]      # the marker sits where it applied
    scenario(config(tmp_path), body)


def test_export_writes_a_partial_report_of_the_live_run(tmp_path):
    async def body(app, pilot):
        await until(pilot, lambda: app.query_one(MemoryPanel).latest is not None, what="a sample")
        await pilot.press("e")
        report = Path(app.run_dir) / "report.json"
        await until(pilot, report.exists, what="the report")
        run, = json.loads(report.read_text())["runs"]
        assert run["id"] == Path(app.run_dir).name and run["partial"] is True
        assert run["summary"]["steps"] > 0 and run["flops"] is not None
        for ext in ("html", "md", "csv"):
            assert (Path(app.run_dir) / f"report.{ext}").is_file()
        await until(pilot, lambda: any("reports written" in line
                                       for line in app.query_one(EventsPanel).history),
                    what="the events panel to say so")
    scenario(config(tmp_path), body)


def test_divergence_pauses_then_lower_lr_rewind_and_resume_from_the_keyboard(tmp_path):
    cfg = config(tmp_path, optimizer="sgd", lr=1e6, clip=None, on_diverge="pause", snapshot_every=5)

    async def body(app, pilot):
        await until(pilot, lambda: status(app)["status"] == "diverged: paused", what="divergence")
        stuck = status(app)["step"]
        await type_value(pilot, app, "l", "0.001")
        await until(pilot, lambda: applied(app, "lr 0.001"), what="the new lr")
        await pilot.press("w")
        await until(pilot, lambda: applied(app, "rewind"), what="the rewind")
        await pilot.press("space")
        await until(pilot, lambda: status(app)["step"] > stuck + 20, what="training again")
        assert status(app)["status"] == "training"
        assert any("diverged" in line for line in app.query_one(EventsPanel).history)
    scenario(cfg, body)


def test_pause_single_step_resume(tmp_path):
    async def body(app, pilot):
        await until(pilot, lambda: status(app)["step"] > 10, what="steps")
        await pilot.press("space")
        await until(pilot, lambda: status(app)["status"] == "paused", what="paused")
        paused_at = status(app)["step"]
        await pilot.pause(0.5)
        assert status(app)["step"] == paused_at
        await pilot.press("s")
        await until(pilot, lambda: status(app)["step"] == paused_at + 1, what="one step")
        await pilot.pause(0.5)
        assert status(app)["step"] == paused_at + 1
        await pilot.press("space")
        await until(pilot, lambda: status(app)["step"] > paused_at + 10, what="resumed steps")
        assert [e["step"] for e in applied(app, "pause")] == [paused_at]
    scenario(config(tmp_path), body)


def test_trace_key_writes_a_trace_into_the_run_dir(tmp_path):
    async def body(app, pilot):
        await until(pilot, lambda: status(app)["step"] > 5, what="steps")
        await pilot.press("t")
        log = app.query_one(EventsPanel)
        await until(pilot, lambda: any("trace of 5 steps" in line for line in log.history),
                    what="the trace")
        traces = list(Path(app.run_dir).glob("trace-step*.json"))
        assert len(traces) == 1 and traces[0].stat().st_size > 0
    scenario(config(tmp_path), body)


def test_help_screen_and_quit_records_the_final_status(tmp_path):
    async def body(app, pilot):
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), what="help")
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, HelpScreen), what="help closed")
        await until(pilot, lambda: status(app)["step"] > 5, what="steps")
        await pilot.press("q")
    app = scenario(config(tmp_path), body)
    assert app.final is not None and app.final.status == "interrupted"
    assert not app.bridge.process.is_alive()
    with open_run(app.run_dir) as r:
        assert r.info().status == "interrupted"


def test_a_killed_trainer_is_reported_and_r_restarts_it(tmp_path):
    async def body(app, pilot):
        await until(pilot, lambda: status(app)["step"] > 5, what="steps")
        first = app.run_dir
        os.kill(app.bridge.process.pid, signal.SIGKILL)
        await until(pilot, lambda: status(app)["status"] == "crashed", what="the crash")
        assert any("died" in line for line in app.query_one(EventsPanel).history)
        with open_run(first) as r:
            assert r.info().status == "killed" and r.info().steps > 5   # nothing recorded lost
        await pilot.press("r")
        await until(pilot, lambda: app.run_dir != first and status(app)["step"] > 5,
                    what="the restarted run")
    scenario(config(tmp_path), body)


def test_a_trainer_exception_shows_its_traceback_and_the_ui_lives_on(tmp_path):
    text = tmp_path / "corpus.txt"
    text.write_text("def f(x):\n    return x + 1\n" * 100)
    cfg = config(tmp_path, model="transformer", layers=1, width=16, heads=2, seq_len=8, text=str(text))
    text.unlink()                     # valid when checked, gone when the trainer reads it

    async def body(app, pilot):
        await until(pilot, lambda: status(app)["status"] == "failed", what="the failure")
        history = list(app.query_one(EventsPanel).history)
        assert any("trainer failed: FileNotFoundError" in line for line in history)
        assert any(line.strip().startswith("File ") for line in history)   # the traceback
        await pilot.press("question_mark")                                  # still responsive
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), what="help")
    scenario(cfg, body)


def test_m_restarts_with_another_model(tmp_path):
    async def body(app, pilot):
        await until(pilot, lambda: status(app)["step"] > 5, what="steps")
        await pick(pilot, app, "m", "rnn")
        await until(pilot, lambda: status(app)["model"] == "rnn" and status(app)["step"] > 3,
                    what="the rnn run")
        assert app.cfg.model == "rnn" and app.cfg.cell == "gru"     # the rnn's own defaults
    scenario(config(tmp_path), body)


@pytest.mark.parametrize("size", [(20, 5), (80, 24), (220, 60)])
def test_layout_holds_from_tiny_to_large_and_recovers(tmp_path, size):
    async def body(app, pilot):
        await until(pilot, lambda: status(app)["step"] > 20, what="steps")
        await pilot.resize_terminal(*size)
        await pilot.pause(1.2)                      # two redraws at this size
        drawn = app.query_one(LossPanel).train.count
        await pilot.resize_terminal(120, 40)
        await until(pilot, lambda: app.query_one(LossPanel).train.count > drawn + 20,
                    what="panels to keep filling")
        await pilot.pause(0.6)
        assert status(app)["status"] == "training"
        assert app.query_one(LossPanel).size.width > 20      # the layout came back
    scenario(config(tmp_path), body)


def test_thinning_keeps_every_non_step_event_and_the_last_step():
    from lsml_tui.trainer.events import CommandApplied, StepMetrics
    from lsml_tui.tui.bridge import thin
    events = [StepMetrics(s, 1.0, 1e-3, 1.0, False, 1.0, float(s)) for s in range(1000)]
    events.insert(500, CommandApplied(500, "lr 0.1", "lr 0.001 -> 0.1", {"lr": 0.1}))
    kept, dropped = thin(events, budget=101)
    steps = [e for e in kept if isinstance(e, StepMetrics)]
    assert len(steps) == 101 and steps[-1].step == 999          # 100 evenly spaced + the last
    assert [s.step for s in steps[:3]] == [0, 10, 20]            # stride 1000 / 100 = 10
    assert any(isinstance(e, CommandApplied) for e in kept)
    assert dropped == 1000 - 101 and thin(events[:50], 101) == (events[:50], 0)


def test_a_flood_of_100k_events_a_second_keeps_the_dashboard_responsive(tmp_path):
    from lsml_tui.trainer.events import RunStarted, StepMetrics
    from lsml_tui.tui.bridge import ReplayBridge

    class Flood(ReplayBridge):
        """A fake producer: 100,000 step events for every second of wall time."""
        def __init__(self, cfg):
            super().__init__(cfg, [RunStarted(0, "flood", "", {}, 0, "cpu")])
            self.t0, self.step = time.monotonic(), 0

        def more(self):
            due = int((time.monotonic() - self.t0) * 100_000)
            out = [StepMetrics(s, 1.0 / (1 + s), 1e-3, 1.0, False, 1e5, s / 1e5)
                   for s in range(self.step, due)]
            self.step = due
            return out

    async def main():
        app = LsmlApp(config(tmp_path), bridge_factory=Flood)
        async with app.run_test(size=(140, 42)) as pilot:
            loss = app.query_one(LossPanel)
            per_frame, added = [], [0]     # step points handed to the panel between redraws
            add, redraw = loss.add, loss.redraw
            loss.add = lambda e: (added.__setitem__(0, added[0] + 1), add(e))[1]
            loss.redraw = lambda: (per_frame.append(added[0]), added.__setitem__(0, 0),
                                   redraw())[1]
            # Frames keep coming and a key is handled while the flood runs; how fast depends
            # on the machine, so the waits are long and nothing here counts frames a second.
            await until(pilot, lambda: app.bridge.step >= 300_000 and len(per_frame) >= 4,
                        what="the flood to run for several frames")
            await pilot.press("g")                       # a key during the flood is handled
            await until(pilot, lambda: loss.log_scale is True, what="the key to be handled")
            assert max(per_frame) <= TICK_BUDGET + 1     # each frame's work stays bounded
            assert app.thinned > 0 and any("thinned" in line
                                           for line in app.query_one(EventsPanel).history)
            assert len(loss.train) <= 2000 + 256 + 2 * 1000   # what a panel holds stays bounded
            assert status(app)["step"] == app.bridge.step   # the last step always gets through
    asyncio.run(main())


def test_while_the_dashboard_thins_the_store_keeps_every_step(tmp_path, monkeypatch):
    monkeypatch.setattr("lsml_tui.tui.app.TICK_BUDGET", 3)   # thin nearly everything
    cfg = config(tmp_path, steps=400)

    async def body(app, pilot):
        await until(pilot, lambda: status(app)["status"] == "finished", what="the run to end")
        assert app.thinned > 0
        assert app.query_one(LossPanel).train.count < 400     # the UI drew fewer points
        with open_run(app.run_dir) as r:
            assert r.steps()["step"] == list(range(400))       # the store has them all
    scenario(cfg, body)
