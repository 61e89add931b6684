"""The sharpness panel on scripted events: only with --sharpness-every, the last sharpness
against the optimizer's edge-of-stability limit as a percentage, and a warning above it."""

from lsml_tui.trainer.config import RunConfig
from lsml_tui.trainer.validate import resolve
from lsml_tui.trainer.events import CommandApplied, RunStarted, SharpnessSample
from lsml_tui.tui.panels import SharpnessPanel

from tests.conftest import drawn


def config(tmp_path, **kw):
    kw = {"model": "mlp", "optimizer": "sgd", "lr": 0.1, "sharpness_every": 10, **kw}
    return resolve(RunConfig(runs_dir=str(tmp_path), **kw))


def sample(step, sharpness, threshold=20.0, preconditioned=False):
    return SharpnessSample(step, sharpness, threshold, preconditioned, 20, 0.04)


def shown(cfg, events):
    """The sharpness panel's text and border title once drawn (None: there is no panel)."""
    return drawn(cfg, events, SharpnessPanel, lambda panel: (
        str(panel.query_one("#sharpness-text").render()), panel.border_title))


def rising(last=15.0):
    """Steps 10..100, the sharpness rising linearly to `last`, against 2/lr = 2/0.1 = 20."""
    return [RunStarted(0, "r", "", {}, 32, "cpu"),
            *(sample(step, last * step / 100) for step in range(10, 101, 10))]


def test_a_sharpness_below_the_limit_is_a_percentage_of_it(tmp_path):
    text, title = shown(config(tmp_path), rising())
    # 15 / 20 = 0.75: 75% of the limit 2/lr = 2/0.1 = 20
    assert "sharpness 15 / limit 20 (2/lr)  75%  0.04 s per measurement" in text
    assert "unstable" not in text and title == "Sharpness (edge of stability)"


def test_a_sharpness_above_the_limit_is_called_unstable(tmp_path):
    text, _ = shown(config(tmp_path), [*rising(), sample(110, 25.0)])
    # 25 / 20 = 1.25: 125%
    assert "limit 20 (2/lr)  125%" in text and "above the limit: unstable" in text


def test_no_panel_without_sharpness_every(tmp_path):
    assert shown(config(tmp_path, sharpness_every=None), rising()) is None


def test_no_limit_known_and_waiting(tmp_path):
    text, _ = shown(config(tmp_path), [sample(10, 3.0, threshold=None)])
    assert "sharpness 3 / no limit known for this optimizer" in text
    text, _ = shown(config(tmp_path), [])
    assert text.startswith("waiting for the first measurement (every 10 steps)")


def test_adam_is_preconditioned_against_its_own_limit_and_nothing_raises(tmp_path):
    events = [CommandApplied(20, "optimizer adam", ""), sample(20, 900.0, 1900.0, True),
              sample(30, float("nan"), 1900.0, True)]
    text, title = shown(config(tmp_path), events)
    assert title == "Preconditioned sharpness"
    assert "sharpness N/A / limit 1.9e+03 ((2+2 beta1)/((1-beta1) lr))  N/A  0.04 s" in text
