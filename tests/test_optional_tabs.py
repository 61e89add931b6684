"""--model linear with --sharpness-every and --noise-scale-every on a 120x40 terminal: the
optional panels are tabs in the FLOPs panel's cell, so each plot gets the cell's height (in
the side column, stacked, each got a row or two and the events log fell off the screen)."""

import asyncio

import pytest
import textual
from textual.widgets import Sparkline
from textual_plotext import PlotextPlot

from lsml_tui.trainer.config import RunConfig
from lsml_tui.trainer.events import (NoiseSample, RunStarted, SharpnessSample, StepMetrics,
                                     TheoryInfo, TheorySample)
from lsml_tui.trainer.validate import resolve
from lsml_tui.tui.app import LsmlApp
from lsml_tui.tui.bridge import ReplayBridge
from lsml_tui.tui.panels import (EventsPanel, FlopsPanel, NoiseScalePanel, SharpnessPanel,
                                 TheoryPanel)

SIZE = (120, 40)
# plotext spends 3 rows on its frame's top and bottom and the x labels: 3 + 5 leaves 5 rows
# (20 braille dots) for the curve
MIN_PLOT_ROWS = 3 + 5
MIN_LOG_ROWS = 2 + 5        # the events log: its border and 5 lines


def scripted_events() -> list:
    """300 steps of a least-squares run measured every 20 steps: distance to w* falling at
    the predicted rate, sharpness rising towards its limit, the noise scale growing."""
    events = [RunStarted(0, "20260101-000000-linear-abcd", "runs/x", {}, 32, "cpu", "fp64"),
              TheoryInfo(0, 1.0, 0.01, 100.0, "sgd", 0.5, None, 0.995, 2.0, None, 3.0)]
    for step in range(300):
        events.append(StepMetrics(step, 2 * 0.99 ** step, 0.5, 1.0, False, 64.0, step / 100))
        events.append(TheorySample(step, 3.0 * 0.995 ** step))
        if step % 20 == 0:
            events.append(SharpnessSample(step, 1.0 + step / 300, 4.0, False, 20, 0.01))
            events.append(NoiseSample(step, 40.0 + step / 10, 1.0, 40.0, 64, 32, 0.02))
    return events


def app(tmp_path) -> LsmlApp:
    cfg = resolve(RunConfig(model="linear", sharpness_every=20, noise_scale_every=20,
                            optimizer="sgd", runs_dir=str(tmp_path)))
    return LsmlApp(cfg, bridge_factory=lambda c: ReplayBridge(c, scripted_events()))


def test_each_optional_panel_gets_a_readable_plot_at_120x40(tmp_path):
    dashboard = app(tmp_path)
    rows = SIZE[1] - 1                                  # the footer takes the last row

    async def main():
        seen = {}
        async with dashboard.run_test(size=SIZE) as pilot:
            await pilot.pause(1.2)
            for panel, shows in ((TheoryPanel, PlotextPlot), (SharpnessPanel, PlotextPlot),
                                 (NoiseScalePanel, Sparkline), (FlopsPanel, None)):
                widget = dashboard.query_one(panel)
                if shows is not None:
                    widget = widget.query_one(shows)
                seen[panel.__name__] = widget.region
                await pilot.press("p")                  # the next tab
                await pilot.pause(0.3)
            seen["events"] = dashboard.query_one(EventsPanel).region
        return seen

    seen = asyncio.run(main())
    for name in ("TheoryPanel", "SharpnessPanel"):
        assert seen[name].height >= MIN_PLOT_ROWS, (name, seen[name])
    assert seen["NoiseScalePanel"].height >= 2          # the sparkline, 2 rows at least
    assert seen["FlopsPanel"].height > 0                # the last tab: FLOPs are still there
    assert seen["events"].height >= MIN_LOG_ROWS
    assert all(region.bottom <= rows for region in seen.values()), seen   # all on screen


@pytest.mark.skipif(not textual.__version__.startswith("8.2"),
                    reason="snapshots were recorded with Textual 8.2.x")
def test_optional_panels_as_tabs_at_120x40(snap_compare, tmp_path):
    assert snap_compare(app(tmp_path), terminal_size=SIZE, press=["_"])
