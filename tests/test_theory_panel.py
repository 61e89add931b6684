"""The least-squares theory panel on scripted events: only for --model linear, the theoretical
and the measured rate side by side, and a warning when the lr is past the stability limit."""

import math

import pytest

from lsml_tui.profilers.fit import fitted_rate
from lsml_tui.trainer.config import RunConfig
from lsml_tui.trainer.validate import resolve
from lsml_tui.trainer.events import RunStarted, TheoryInfo, TheorySample
from lsml_tui.tui.panels import TheoryPanel

from tests.conftest import drawn


def info(lr=1.0, rate=0.99, limit=2.0, ball=None, optimizer="sgd"):
    return TheoryInfo(0, L=1.0, mu=0.01, kappa=100.0, optimizer=optimizer, lr=lr, momentum=None,
                      rate_theory=rate, lr_limit=limit, noise_ball=ball, distance=1.0)


def shown(cfg, events):
    """The theory panel's text after the app has drawn `events` (None: there is no panel)."""
    return drawn(cfg, events, TheoryPanel, lambda panel: (
        str(panel.query_one("#theory-text").render()), panel.predicted()))


def test_theory_and_measured_rate_agree_on_an_exact_geometric_decay(tmp_path):
    cfg = resolve(RunConfig(model="linear", runs_dir=str(tmp_path)))
    samples = [TheorySample(t, 0.99 ** t) for t in range(300)]
    text, lines = shown(cfg, [RunStarted(0, "r", "", {}, 32, "cpu"), info(), *samples])
    # ln 0.99^t = t ln 0.99 exactly: the fitted slope is ln 0.99, the factor 0.990
    assert "L 1  mu 0.01  kappa 100  lr 1 (limit 2/L = 2)" in text
    assert "rate: theory 0.990, measured 0.990" in text and "unstable" not in text
    (xs, ys), = lines                       # one prediction, from step 0 to the last sample
    assert xs == [0, 299] and math.isclose(ys[1], 299 * math.log10(0.99))


def test_an_lr_past_the_limit_is_called_unstable(tmp_path):
    cfg = resolve(RunConfig(model="linear", runs_dir=str(tmp_path)))
    samples = [TheorySample(t, 1.5 ** t) for t in range(20)]
    text, _ = shown(cfg, [RunStarted(0, "r", "", {}, 32, "cpu"), info(lr=2.5, rate=1.5), *samples])
    assert "lr 2.5 (limit 2/L = 2)" in text and "unstable: lr above 2/L" in text


def test_adaptive_optimizers_have_no_rate_and_an_empty_panel_waits(tmp_path):
    cfg = resolve(RunConfig(model="linear", runs_dir=str(tmp_path)))
    text, lines = shown(cfg, [info(rate=None, limit=None, optimizer="adam")])
    assert "no linear-rate theory for adam" in text and "limit N/A" in text
    assert "measured N/A" in text and lines == []
    text, _ = shown(cfg, [])
    assert text.startswith("waiting for the first step")
    assert fitted_rate([0, 1], [1.0, 0.0]) is None             # nothing above rounding level
    # a run stuck at rounding level after step 10: the floor leaves those steps out
    steps = list(range(40))
    floored = [0.5 ** min(t, 10) * (1 if t <= 10 else 1e-13) for t in steps]
    assert fitted_rate(steps, floored) is None
    assert fitted_rate(steps, [0.5 ** t for t in steps]) == pytest.approx(0.5)


def test_only_the_linear_model_has_a_theory_panel(tmp_path):
    assert shown(resolve(RunConfig(model="mlp", runs_dir=str(tmp_path))), []) is None
