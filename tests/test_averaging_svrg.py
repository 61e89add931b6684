"""Weight averaging (--average) and SVRG against the noise ball of constant-step SGD."""

import pytest
import torch

from lsml_tui.trainer import commands as C
from lsml_tui.trainer.optim.averaging import WeightAverage
from lsml_tui.trainer.config import ConfigError
from lsml_tui.trainer.events import AveragedVal

from tests.test_theory import linear
from tests.test_trainer import quick, run_with

# constant-step SGD on least squares: settles in a noise ball of E|w - w*|^2 ~ 0.02-0.03
NOISY = dict(batch_size=8, lr=0.2, noise=0.5, steps=4000, val_every=1000)


@pytest.mark.parametrize("spec, expected", [
    ("polyak", 2.0),                # the mean of 1, 2, 3
    ("ema:0.5", 2.25),              # 1 -> 0.5*1 + 0.5*2 = 1.5 -> 0.5*1.5 + 0.5*3 = 2.25
])
def test_the_average_is_torchs_arithmetic(spec, expected):
    model = torch.nn.Linear(1, 1, bias=False)
    average = WeightAverage(model, spec)
    for value in (1.0, 2.0, 3.0):
        with torch.no_grad():
            model.weight.fill_(value)
        average.update(model)
    assert average.model.weight.item() == pytest.approx(expected)


@pytest.mark.parametrize("bad", ["mean", "ema", "ema:1.5", "ema:0", "polyak:0.9"])
def test_a_bad_average_is_refused(tmp_path, bad):
    with pytest.raises(ConfigError, match="--average"):
        linear(tmp_path, average=bad)


def test_polyak_averaging_shrinks_the_distance_far_below_the_noise_ball(tmp_path):
    trainer, rec, _ = run_with(linear(tmp_path, average="polyak", **NOISY))
    s = trainer.summary()
    t = s["theory"]
    # the iterates wander in the ball; their running mean converges (its error ~ 1/t)
    assert t["noise_ball_measured"] == pytest.approx(t["noise_ball_theory"], rel=0.25)
    assert t["distance_averaged"] ** 2 < t["noise_ball_theory"] / 10
    assert s["final_val_loss_averaged"] < s["final_val_loss"]
    # validated every 1000 steps, after steps 999, 1999, ... (as the raw weights are)
    assert [e.step for e in rec.of(AveragedVal)] == [999, 1999, 2999, 3999]


def test_an_ema_of_the_weights_sits_inside_the_noise_ball(tmp_path):
    trainer, _, _ = run_with(linear(tmp_path, average="ema:0.99", **NOISY))
    t = trainer.summary()["theory"]
    assert t["distance_averaged"] ** 2 < t["noise_ball_theory"] / 2


def test_svrg_converges_linearly_where_sgd_stalls_in_its_noise_ball(tmp_path):
    sgd, _, _ = run_with(linear(tmp_path, **NOISY))
    svrg, _, _ = run_with(linear(tmp_path, **{**NOISY, "optimizer": "svrg", "lr": 0.05},
                                 svrg_every=64))
    stalled, converged = sgd.summary()["theory"], svrg.summary()["theory"]
    assert stalled["distance"] ** 2 > stalled["noise_ball_theory"] / 10   # still in the ball
    assert converged["distance"] < 1e-6                                   # SVRG: no ball
    assert converged["rate_measured"] < 1                                 # linear convergence


def test_svrg_joins_the_live_switch_and_trains_a_neural_net(tmp_path):
    trainer, rec, _ = run_with(quick(tmp_path, optimizer="sgd", steps=80),
                               plan=[(20, C.SetOptimizer("svrg"))])
    assert trainer.optimizer_name == "svrg" and trainer.svrg is not None
    s = trainer.summary()
    assert s["final_train_loss"] < s["initial_train_loss"]


@pytest.mark.parametrize("changes, words", [
    (dict(optimizer="adam", svrg_every=10), "--svrg-every does not apply to adam"),
    (dict(optimizer="svrg", svrg_every=0), "--svrg-every 0 is out of range"),
    (dict(optimizer="svrg", workers=2), "svrg runs in one process"),
])
def test_bad_svrg_settings_are_refused(tmp_path, changes, words):
    with pytest.raises(ConfigError, match=words):
        quick(tmp_path, **changes)
