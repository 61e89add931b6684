"""The gradient noise scale in one process (--noise-scale-every): the estimator, its value on
the linear family against the closed form, and that measuring it leaves the run unchanged."""

import math

import pytest
import torch

from lsml_tui.profilers.noise import NoiseScale, batch_tradeoff, chunk_norms, parts_for
from lsml_tui.trainer.config import ConfigError, RunConfig
from lsml_tui.trainer.validate import resolve
from lsml_tui.trainer.events import NoiseSample, StepMetrics, ValMetrics
from lsml_tui.trainer.loop import Trainer
from lsml_tui.trainer.store.reader import open_run

from conftest import run_json
from test_theory import linear
from test_trainer import quick, run_with


def test_noise_scale_from_two_batch_sizes_recovers_its_inputs():
    # E|g_b|^2 = |G|^2 + tr(Sigma) / b, with |G|^2 = 4 and tr(Sigma) = 400:
    # b = 32: 4 + 12.5 = 16.5; b = 64 (two ranks): 4 + 6.25 = 10.25; B_simple = 400 / 4 = 100
    noise = NoiseScale()
    assert noise.update(16.5, 10.25, 32, 64) == pytest.approx(100.0)
    assert noise.g2 == pytest.approx(4.0) and noise.trace == pytest.approx(400.0)
    # |G|^2 = (64 * 1 - 32 * 16) / 32 = -14 < 0: the estimate is undefined, not negative
    assert NoiseScale().update(16.0, 1.0, 32, 64) is None
    # tr(Sigma) = (1 - 2) / (1/32 - 1/64) = -64 < 0 (the big batch looked noisier): undefined
    assert NoiseScale().update(1.0, 2.0, 32, 64) is None


def test_the_batch_tradeoff_and_the_parts():
    # at B = B_noise both pay double: 1 + 100/100 = 2 times the minimum steps and examples
    assert batch_tradeoff(100.0, 100) == (2.0, 2.0)
    # B = 25: 1 + 100/25 = 5x the minimum steps, 1 + 25/100 = 1.25x the minimum examples
    assert batch_tradeoff(100.0, 25) == (5.0, 1.25)
    assert parts_for(8) == 4 and parts_for(7) == 2 and parts_for(2) == 2


def test_chunk_norms_are_unbiased_on_the_linear_family(tmp_path):
    """At fixed weights, E|g_b|^2 = |G|^2 + tr(Sigma)/b exactly, with G and Sigma in closed form
    from X, y and w: per-example gradients g_i = r_i x_i of (x_i.w - y_i)^2 / 2, r = Xw - y."""
    cfg = linear(tmp_path, dim=8, examples=256, batch_size=32)
    trainer = Trainer(cfg)
    task, model = trainer.task, trainer.model
    with torch.no_grad():                                   # away from w = 0, off w*
        for p in model.parameters():
            p.copy_(torch.linspace(-1, 1, p.numel(), dtype=p.dtype).view_as(p))
    w = torch.cat([p.detach().flatten() for p in model.parameters()])
    r = task.x @ w - task.y                                 # (N,) residuals
    G = task.x.T @ r / len(r)                               # the whole set's gradient
    trace = (r ** 2 * (task.x ** 2).sum(1)).mean() - G @ G  # E|g_i|^2 - |G|^2
    g2 = float(G @ G)
    params = list(model.parameters())
    gen = torch.Generator().manual_seed(5)
    draws = [chunk_norms(lambda x, y: task.loss(model(x), y), params, *task.sample(32, gen),
                         parts=4) for _ in range(1500)]
    b_small, b_big = draws[0][2], draws[0][3]
    assert (b_small, b_big) == (8, 32)                      # 32 examples in 4 parts of 8
    for column, b in ((0, b_small), (1, b_big)):
        values = torch.tensor([d[column] for d in draws], dtype=torch.float64)
        expected = g2 + float(trace) / b
        sem = float(values.std() / math.sqrt(len(values)))  # the mean's sampling error
        assert abs(float(values.mean()) - expected) < 4 * sem, (column, expected)
    # the EMA-free estimate from the means recovers B_simple = tr(Sigma) / |G|^2
    small = sum(d[0] for d in draws) / len(draws)
    big = sum(d[1] for d in draws) / len(draws)
    estimate = NoiseScale(decay=0.0).update(small, big, b_small, b_big)
    assert estimate == pytest.approx(float(trace) / g2, rel=0.15)
    assert all(p.grad is None for p in params)              # .grad untouched


def test_measuring_the_noise_scale_changes_no_loss(tmp_path):
    """Its own batches, and BatchNorm's running statistics put back: the same losses on or off."""
    base = dict(norm="batch", steps=40, val_every=20)
    _, off, _ = run_with(quick(tmp_path / "off", **base), store=False)
    trainer, on, _ = run_with(quick(tmp_path / "on", noise_scale_every=5, **base), store=False)
    train = lambda rec: [e.loss for e in rec.of(StepMetrics)]  # noqa: E731
    val = lambda rec: [e.val_loss for e in rec.of(ValMetrics)]  # noqa: E731
    assert train(on) == train(off) and len(train(on)) == 40
    # validation runs in eval mode on BatchNorm's running statistics: restored, or these differ
    assert val(on) == val(off) and len(val(on)) == 2        # after steps 20 and 40
    samples = on.of(NoiseSample)
    assert [s.step for s in samples] == list(range(4, 40, 5))   # after steps 5, 10, ..., 40
    batch = trainer.cfg.batch_size
    assert all(s.batch == batch and s.part == batch // 4 for s in samples)
    assert samples[-1].noise_scale is not None and samples[-1].noise_scale > 0
    assert samples[-1].noise_scale == pytest.approx(samples[-1].trace / samples[-1].g2)


def test_headless_json_and_the_store_have_it(tmp_path):
    runs = tmp_path / "runs"
    summary = run_json("--model", "mlp", "--layers", "1", "--width", "16", "--steps", "30",
                       "--batch-size", "32", "--noise-scale-every", "10", "--runs-dir", str(runs))
    assert summary["noise_scale_batch"] == 32
    with open_run(summary["run_dir"]) as r:
        stored = r.samples("NoiseSample")
    assert [s["step"] for s in stored] == [9, 19, 29]       # every 10 of 30 steps
    assert summary["noise_scale"] == stored[-1]["noise_scale"]


@pytest.mark.parametrize("changes, words", [
    (dict(noise_scale_every=0), "--noise-scale-every 0 is out of range"),
    (dict(noise_scale_every=5, batch_size=1), "--batch-size >= 2"),
    (dict(noise_scale_every=5, workers=2), "comes from the ranks"),
])
def test_bad_noise_scale_settings_are_refused(changes, words):
    with pytest.raises(ConfigError, match=words):
        resolve(RunConfig(model="mlp", **changes))
