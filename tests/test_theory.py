"""--model linear: exact constants, and optimization theory's predictions against the run.

Every expected number is worked out beside it from kappa, the step and the momentum.
"""

import math

import pytest
import torch

from lsml_tui.profilers import theory
from lsml_tui.trainer import commands as C
from lsml_tui.trainer.config import ConfigError, RunConfig
from lsml_tui.trainer.validate import resolve
from lsml_tui.trainer.data import build_task
from lsml_tui.trainer.events import TheoryInfo, TheorySample

from tests.test_trainer import run_with

CPU = torch.device("cpu")


def linear(tmp_path, **changes):
    base = dict(model="linear", dim=8, kappa=10.0, examples=256, noise=0.1, optimizer="sgd",
                lr=1.0, clip=None, steps=200, val_every=50, val_batches=1,
                runs_dir=str(tmp_path / "runs"))
    return resolve(RunConfig(**{**base, **changes}))


def test_the_spectrum_is_exact_and_w_star_is_the_minimiser(tmp_path):
    cfg = linear(tmp_path, dim=6, kappa=100.0, examples=64)
    task = build_task(cfg, CPU)
    h = task.x.T @ task.x / 64
    # geometric from 1/kappa to 1 over 6 values: 100^(-(5-k)/5) = 0.01, 0.0251, ..., 1
    expected = torch.tensor([100.0 ** (-(5 - k) / 5) for k in range(6)], dtype=torch.float64)
    assert torch.allclose(torch.linalg.eigvalsh(h), expected, rtol=0, atol=1e-12)
    gradient = task.x.T @ (task.x @ task.w_star - task.y) / 64
    assert gradient.norm() < 1e-12                                 # the normal equations hold
    assert cfg.batch_size == 64                                    # default: full batch


@pytest.mark.parametrize("changes, words", [
    (dict(examples=4, dim=8), "examples >= dim"),
    (dict(kappa=0.5), "--kappa 0.5"),
    (dict(batch_size=300), "at most 256"),
    (dict(norm="layer"), "no normalization slot"),
])
def test_bad_linear_settings_are_refused(tmp_path, changes, words):
    with pytest.raises(ConfigError, match=words):
        linear(tmp_path, **changes)
    with pytest.raises(ConfigError, match="does not apply to the mlp"):
        resolve(RunConfig(model="mlp", kappa=10.0))


def test_textbook_rates_and_step_limits():
    kappa = 100.0
    eig = [kappa ** -(1 - k / 31) for k in range(32)]             # 1/kappa .. 1
    assert theory.contraction_rate("sgd", 1.0, eig) == pytest.approx(1 - 1 / kappa)   # 0.99
    # heavy ball at Polyak's optimum: a = 4/(1 + 1/sqrt k)^2, b = ((sqrt k - 1)/(sqrt k + 1))^2
    a, b = 4 / (1 + 0.1) ** 2, (9 / 11) ** 2                       # sqrt(100) = 10
    assert theory.contraction_rate("momentum", a, eig, b) == pytest.approx(9 / 11, abs=1e-6)
    assert theory.contraction_rate("adam", 1e-3, eig) is None
    assert theory.lr_limit("sgd", 1.0) == 2.0
    assert theory.lr_limit("momentum", 1.0, 0.9) == pytest.approx(3.8)        # 2 + 2(0.9)
    assert theory.lr_limit("nesterov", 1.0, 0.9) == pytest.approx(3.8 / 2.8)  # (2+2b)/(1+2b)
    for name, beta in (("sgd", 0.0), ("momentum", 0.9), ("nesterov", 0.9)):   # the limit is
        limit = theory.lr_limit(name, 1.0, beta)                               # where the
        assert theory.contraction_rate(name, 0.99 * limit, eig, beta) < 1      # rate crosses 1
        assert theory.contraction_rate(name, 1.01 * limit, eig, beta) > 1


def test_gradient_descent_at_lr_1_contracts_at_1_minus_1_over_kappa(tmp_path):
    trainer, rec, _ = run_with(linear(tmp_path))
    t = trainer.summary()["theory"]
    assert (t["L"], t["mu"], t["kappa"]) == pytest.approx((1.0, 0.1, 10.0))
    assert t["rate_theory"] == pytest.approx(0.9)                   # 1 - 1/10
    assert t["rate_measured"] == pytest.approx(0.9, abs=1e-3)
    samples = rec.of(TheorySample)
    assert [s.step for s in samples] == list(range(200))
    assert samples[0].distance == pytest.approx(float(trainer.task.w_star.norm()))  # w_0 = 0


@pytest.mark.parametrize("lr, status", [(1.95, "finished"), (2.05, "diverged")])
def test_a_step_below_2_over_l_converges_and_above_it_diverges(tmp_path, lr, status):
    trainer, _, _ = run_with(linear(tmp_path, lr=lr, steps=600))
    s = trainer.summary()
    assert s["status"] == status
    if status == "finished":        # the slowest mode: max(|1 - 1.95|, 1 - 0.195) = 0.95
        assert s["theory"]["rate_theory"] == pytest.approx(0.95)
        assert s["theory"]["distance"] < 1e-9
    else:                           # |1 - 2.05| = 1.05 > 1: the divergence rule stops it
        assert s["theory"]["rate_theory"] == pytest.approx(1.05)


def test_heavy_ball_at_its_optimum_beats_gradient_descent_as_theory_says(tmp_path):
    # kappa 10: a = 4/(1 + 1/sqrt 10)^2, b = ((sqrt 10 - 1)/(sqrt 10 + 1))^2, rate (sqrt 10 - 1)/(sqrt 10 + 1)
    r = math.sqrt(10)
    a, b, rate = 4 / (1 + 1 / r) ** 2, ((r - 1) / (r + 1)) ** 2, (r - 1) / (r + 1)   # 0.5195
    hb, _, _ = run_with(linear(tmp_path, optimizer="momentum", lr=a, momentum=b, steps=60))
    t = hb.summary()["theory"]
    assert t["rate_theory"] == pytest.approx(rate, abs=1e-6)
    # at the optimum both ends of the spectrum are double roots: the error goes as t * rate^t,
    # so the fitted slope over steps 30..60 is above ln(rate) by about 1/t ~ 1/40
    assert rate <= t["rate_measured"] < rate * math.exp(1 / 25)
    assert t["rate_measured"] < 0.9 - 0.3                          # GD at its best: 1 - 1/10


def test_sgd_settles_in_the_noise_ball_theory_predicts(tmp_path):
    cfg = linear(tmp_path, batch_size=8, lr=0.2, noise=0.5, steps=6000, val_every=10**6)
    trainer, _, _ = run_with(cfg, store=False)
    t = trainer.summary()["theory"]
    # E||w - w*||^2 over the last 3000 steps: about 150 independent stretches of ~20 steps
    # (the slowest mode mixes at 1 - 0.2/10 per step), each a sum of 8 modes: a relative
    # standard error near sqrt(2/8/150) = 4%; 15% is more than 3 of them
    assert t["noise_ball_measured"] == pytest.approx(t["noise_ball_theory"], rel=0.15)
    # the small-step form a sigma^2 D / 2B = 0.2 * 0.25 * 8 / 16 = 0.025 is the right size
    assert 0.5 < t["noise_ball_theory"] / 0.025 < 2


def test_clipping_is_counted_as_outside_the_theory(tmp_path):
    # batch 1: a single example's gradient x (x^T w - y) is far larger than the full one's
    trainer, _, _ = run_with(linear(tmp_path, batch_size=1, lr=0.1, clip=0.1, steps=50))
    t = trainer.summary()["theory"]
    assert t["clipped_steps"] == trainer.clip_count > 0


def test_predictions_follow_a_live_lr_change(tmp_path):
    trainer, rec, _ = run_with(linear(tmp_path, steps=100), plan=[(40, C.SetLR(0.5))])
    infos = rec.of(TheoryInfo)
    assert [i.lr for i in infos] == [1.0, 0.5]
    assert infos[1].rate_theory == pytest.approx(0.95)            # 1 - 0.5/10
    assert infos[1].step > 40 and infos[1].distance < infos[0].distance
