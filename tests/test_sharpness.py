"""Sharpness by power iteration on Hessian-vector products, against the step-size limits."""

import math

import pytest
import torch

from lsml_tui.profilers import sharpness
from lsml_tui.trainer.events import SharpnessSample

from tests.test_theory import linear
from tests.test_trainer import quick, run_with


def test_power_iteration_finds_the_top_eigenvalue_of_a_known_quadratic():
    a = torch.tensor([3.0, 1.0, 0.5], dtype=torch.float64)          # H = diag(3, 1, 0.5)
    w = torch.ones(3, dtype=torch.float64, requires_grad=True)
    value, _ = sharpness.top_eigenvalue(lambda: 0.5 * (a * w * w).sum(), [w])
    assert value == pytest.approx(3.0, rel=1e-4)
    # preconditioned by P^-1/2 = diag(1/sqrt 3, 1, 1): P^-1/2 H P^-1/2 = diag(1, 1, 0.5) -> 1
    scale = [torch.tensor([1 / math.sqrt(3), 1.0, 1.0], dtype=torch.float64)]
    value, _ = sharpness.top_eigenvalue(lambda: 0.5 * (a * w * w).sum(), [w], precondition=scale)
    assert value == pytest.approx(1.0, rel=1e-4)


def test_the_thresholds_are_the_edge_of_stability_formulas():
    assert sharpness.threshold("sgd", 0.1) == pytest.approx(20.0)               # 2 / 0.1
    assert sharpness.threshold("momentum", 0.1, momentum=0.9) == pytest.approx(38.0)  # 3.8/0.1
    # Adam: (2 + 2 * 0.9) / ((1 - 0.9) * 1e-3) = 3.8 / 1e-4 = 38000
    assert sharpness.threshold("adam", 1e-3, beta1=0.9) == pytest.approx(38000.0)
    assert sharpness.threshold("rmsprop", 1e-3) is None


def test_on_least_squares_the_sharpness_is_l(tmp_path):
    trainer, rec, _ = run_with(linear(tmp_path, steps=30, sharpness_every=10))
    samples = rec.of(SharpnessSample)
    assert [s.step for s in samples] == [10, 20, 30]
    for s in samples:                       # H's top eigenvalue is L = 1 by construction
        assert s.sharpness == pytest.approx(1.0, abs=1e-3)
        assert s.threshold == pytest.approx(2.0) and not s.preconditioned    # 2 / lr, lr 1
    summary = trainer.summary()
    assert summary["sharpness"] == samples[-1].sharpness and summary["sharpness_threshold"] == 2.0


def test_adams_preconditioned_sharpness_on_a_transformer_with_the_math_attention_kernel(tmp_path):
    cfg = quick(tmp_path, model="transformer", layers=1, width=16, heads=2, seq_len=8,
                batch_size=4, steps=10, sharpness_every=5)
    trainer, rec, _ = run_with(cfg)
    samples = rec.of(SharpnessSample)
    assert [s.step for s in samples] == [5, 10] and trainer.status == "finished"
    for s in samples:
        assert s.preconditioned and math.isfinite(s.sharpness) and s.sharpness > 0
        # (2 + 2 * 0.9) / ((1 - 0.9) * 3e-3) = 3.8 / 3e-4
        assert s.threshold == pytest.approx(3.8 / 3e-4)
