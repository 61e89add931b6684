"""--average on scripted events: the loss panel's third series, the validation loss of the
averaged weights, and the theory panel's log10 ||w_avg - w*|| beside log10 ||w - w*||."""

import asyncio
import math

from lsml_tui.trainer.config import RunConfig
from lsml_tui.trainer.validate import resolve
from lsml_tui.trainer.events import (AveragedVal, RunStarted, StepMetrics, TheoryInfo,
                                     TheorySample, ValMetrics)
from lsml_tui.tui.app import LsmlApp
from lsml_tui.tui.bridge import ReplayBridge
from lsml_tui.tui.panels import LossPanel, TheoryPanel


def drawn(cfg, events, panel_type, read):
    """`read(panel)` once the app has drawn `events`."""
    async def main():
        app = LsmlApp(cfg, bridge_factory=lambda c: ReplayBridge(c, events))
        async with app.run_test(size=(140, 42)) as pilot:
            await pilot.pause(1.2)
            return read(app.query_one(panel_type))
    return asyncio.run(main())


def test_the_loss_panel_draws_the_averaged_weights_validation_loss(tmp_path):
    cfg = resolve(RunConfig(model="mlp", average="polyak", runs_dir=str(tmp_path)))
    steps = [50, 100, 150]
    raw, averaged = [0.40, 0.20, 0.10], [0.35, 0.15, 0.0047]
    events = [RunStarted(0, "r", "", {}, 32, "cpu")]
    for t in range(151):
        events.append(StepMetrics(t, 1.0 / (t + 1), 0.1, 1.0, False, 100.0, 0.0))
        if t in steps:
            k = steps.index(t)
            events += [ValMetrics(t, raw[k]), AveragedVal(t, averaged[k])]

    def read(panel):
        return panel.averaged.points(), panel.val.points(), panel.heading, panel.render().plain
    (axs, ays), (vxs, vys), heading, text = drawn(cfg, events, LossPanel, read)
    assert (axs, ays) == (steps, averaged) and (vxs, vys) == (steps, raw)
    # the training loss's EMA at step 150 (decay 0.98, bias-corrected): the gap is the last
    # validation loss minus it; values print with four significant figures (1/151 = 0.006623)
    ema = sum(0.02 * 0.98 ** (150 - t) / (t + 1) for t in range(151)) / (1 - 0.98 ** 151)
    assert heading == f"train 0.006623  val 0.1  best 0.1@150  gap {0.1 - ema:+.3g}  avg 0.0047"
    assert "avg 0.0047" in text and "val (averaged)" in text


def test_a_run_without_averaging_has_no_averaged_series(tmp_path):
    cfg = resolve(RunConfig(model="mlp", runs_dir=str(tmp_path)))
    events = [RunStarted(0, "r", "", {}, 32, "cpu"), StepMetrics(0, 0.5, 0.1, 1.0, False, 1.0, 0.0),
              ValMetrics(0, 0.25)]
    count, heading = drawn(cfg, events, LossPanel, lambda p: (p.averaged.count, p.heading))
    # one step: the EMA is the loss itself, so the gap is 0.25 - 0.5
    assert count == 0 and heading == "train 0.5  val 0.25  best 0.25@0  gap -0.25"


def theory_info():
    return TheoryInfo(0, L=1.0, mu=0.01, kappa=100.0, optimizer="sgd", lr=1.0, momentum=None,
                      rate_theory=0.99, lr_limit=2.0, noise_ball=None, distance=0.1)


def test_the_theory_panel_draws_the_averaged_distance(tmp_path):
    cfg = resolve(RunConfig(model="linear", optimizer="sgd", average="polyak",
                            runs_dir=str(tmp_path)))
    samples = [TheorySample(t, 0.1, 0.1 / (t + 1)) for t in range(200)]
    events = [RunStarted(0, "r", "", {}, 32, "cpu"), theory_info(), *samples]
    (xs, ys), (dxs, dys), subtitle = drawn(
        cfg, events, TheoryPanel,
        lambda p: (p.averaged.points(), p.distance.points(), str(p.border_subtitle)))
    assert xs == list(range(200)) and dxs == xs and dys == [-1.0] * 200
    # the scripted 0.1 / (t + 1) at the last step, t = 199
    assert math.isclose(ys[-1], math.log10(0.1 / 200))             # -3.30103
    assert math.isclose(ys[0], -1.0) and all(a > b for a, b in zip(ys, ys[1:]))
    assert "avg 10^-3.3" in subtitle and "log10 ||w - w*|| -1" in subtitle


def test_the_theory_panel_without_averaging_is_unchanged(tmp_path):
    cfg = resolve(RunConfig(model="linear", optimizer="sgd", runs_dir=str(tmp_path)))
    samples = [TheorySample(t, 0.1) for t in range(20)]
    events = [RunStarted(0, "r", "", {}, 32, "cpu"), theory_info(), *samples]
    count, subtitle = drawn(cfg, events, TheoryPanel,
                            lambda p: (p.averaged.count, str(p.border_subtitle)))
    assert count == 0 and "avg" not in subtitle
    assert subtitle == "log10 ||w - w*|| -1, theory orange"
