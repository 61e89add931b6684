"""A loss that explodes but stays finite is divergence too (--diverge-factor, --diverge-steps)."""

import math

import pytest

from lsml_tui.trainer import commands as C
from lsml_tui.trainer.watches.divergence import SMOOTHING, BlowUpWatch
from lsml_tui.trainer.events import CommandApplied, Diverged, StepMetrics
from lsml_tui.trainer.store.reader import open_run

from tests.test_faults import Live
from tests.test_trainer import quick, run_with


def test_the_rule_counts_steps_of_the_moving_average_over_the_factor():
    watch = BlowUpWatch(factor=10, patience=3)
    assert watch.observe(0, 1.0, 0.1) is None           # the initial loss: threshold 10 x 1
    # EMA: 0.9 * 1 + 0.1 * 200 = 20.9 > 10 (1 over); 0.9 * 20.9 + 20 = 38.81 (2 over)
    assert watch.observe(1, 200.0, 0.1) is None and watch.over == 1
    assert watch.observe(2, 200.0, 0.1) is None
    assert watch.smoothed == pytest.approx(SMOOTHING * 20.9 + (1 - SMOOTHING) * 200)
    message = watch.observe(3, 200.0, 0.1)              # the third step over: diverged
    assert message and "step 3" in message and "lr 0.1" in message and "200" in message


def test_a_spike_that_falls_back_under_the_factor_is_not_divergence():
    watch = BlowUpWatch(factor=10, patience=3)
    watch.observe(0, 1.0, 0.1)
    # 20.9, then 0.9 * 20.9 + 0.1 * 1 = 18.91, 17.12, ...: over, but a single spike decays
    # below 10 after ln(10 / 20.9) / ln(0.9) = 7 steps; patience 10 is never reached
    watch.patience = 10
    fired = [watch.observe(s, 200.0 if s == 1 else 1.0, 0.1) for s in range(1, 40)]
    assert not any(fired) and watch.over == 0


def test_off_never_fires():
    watch = BlowUpWatch(factor=None, patience=1)
    assert not any(watch.observe(s, 10.0 ** s, 0.1) for s in range(20))


def test_an_exploding_finite_loss_stops_as_diverged_naming_step_loss_and_lr(tmp_path):
    # The run: sgd at lr 1e6 with the default clip 1.0 keeps the loss finite
    cfg = quick(tmp_path, optimizer="sgd", lr=1e6, steps=300, on_diverge="stop")
    trainer, rec, st = run_with(cfg)
    diverged, = rec.of(Diverged)
    losses = [e.loss for e in rec.of(StepMetrics)]
    assert all(math.isfinite(v) for v in losses)        # clipping kept every loss finite
    assert trainer.status == "diverged" and diverged.action == "stop"
    assert diverged.step == len(losses) - 1 < cfg.steps - 1     # stopped early, on the last step
    assert f"step {diverged.step}" in diverged.message and "lr 1e+06" in diverged.message
    assert f"{losses[-1]:.4g}" in diverged.message
    assert max(losses[-cfg.diverge_steps:]) > cfg.diverge_factor * losses[0]
    with open_run(st.run_dir) as r:
        assert r.info().status == "diverged"
        assert [e["kind"] for e in r.events("Diverged")] == ["Diverged"]


def test_on_diverge_pause_keeps_a_good_snapshot_to_rewind_to(tmp_path):
    cfg = quick(tmp_path, optimizer="sgd", lr=1e6, steps=10**6, on_diverge="pause",
                snapshot_every=5)
    with Live(cfg) as live:
        diverged = live.wait(Diverged)
        assert diverged.action == "pause" and live.trainer.paused
        good = live.trainer.snapshot.step               # taken before the loss ran away
        assert f"rewind to step {good}" in diverged.message
        live.trainer.submit(C.SetLR(1e-2))
        live.trainer.submit(C.Rewind())
        live.wait(CommandApplied, lambda e: e.command == "rewind")
        live.trainer.submit(C.Resume())
        after = live.wait(StepMetrics, lambda e: e.step >= diverged.step + 30)
        assert live.trainer.status == "running" and math.isfinite(after.loss)
    first = live.trainer.blow_up.initial
    assert good < diverged.step and live.trainer.blow_up.smoothed < cfg.diverge_factor * first


@pytest.mark.parametrize("model", ["mlp", "cnn", "rnn", "transformer"])
def test_ordinary_training_of_each_default_model_never_diverges(tmp_path, model):
    """Each model family at its defaults (the optimizer, lr and clip a user starts with)."""
    cfg = quick(tmp_path, model=model, layers=None, width=None, steps=200, profile=False,
                val_every=10**6)
    trainer, rec, _ = run_with(cfg, store=False)
    assert trainer.blow_up.threshold is not None        # the rule was armed all run
    assert rec.of(Diverged) == [] and trainer.status == "finished"
