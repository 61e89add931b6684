"""Generalization (issue 23, first part): the best validation loss and its step, the gap,
early stopping with the best weights kept. Every expected number is the store's or
arithmetic on it."""

import statistics

import pytest

from lsml_tui.trainer.config import RunConfig
from lsml_tui.trainer.events import ValMetrics
from lsml_tui.trainer.store.reader import open_run
from lsml_tui.trainer.validate import resolve
from tests.conftest import run_cli, run_here
from tests.test_trainer import run_with

# the default MLP memorizes its finite training set: validation turns within a few
# hundred steps at Adam 3e-3
MLP = ("--model", "mlp", "--steps", "5000", "--val-every", "50")


def stored(run_dir):
    with open_run(run_dir) as r:
        return r.steps(), r.val(), [e["message"] for e in r.events("Notice")]


def test_early_stopping_stops_patience_validations_after_the_best_and_keeps_its_weights(
        tmp_path):
    out = run_here(*MLP, "--early-stop", "3", "--runs-dir", str(tmp_path))
    steps, val, notices = stored(out["run_dir"])
    best = min(zip(val["loss"], val["step"]))
    assert (out["best_val_loss"], out["best_val_step"]) == best
    # validations every 50 steps land on steps 49, 99, ...; three without a new best after
    # the best one, and the run ends before the next step: best + 1 + 3 * 50 steps
    assert out["steps"] == best[1] + 1 + 3 * 50 < 5000
    assert val["step"][-1] == best[1] + 3 * 50
    assert out["status"] == "finished" and out["stopped_early"] is True
    # the best weights, validated again on the same batches, give the best loss exactly
    assert out["restored_best"] is True and out["final_val_loss"] == best[0]
    assert any("early stopping" in n for n in notices)
    assert any(f"restored the weights of step {best[1]}" in n for n in notices)


def test_without_restore_the_run_ends_with_its_last_weights(tmp_path):
    out = run_here(*MLP, "--early-stop", "3", "--no-restore-best", "--runs-dir", str(tmp_path))
    _, val, _ = stored(out["run_dir"])
    assert out["stopped_early"] is True and "restored_best" not in out
    assert out["final_val_loss"] == val["loss"][-1] > out["best_val_loss"]


def test_every_run_says_its_best_validation_and_its_gap(tmp_path):
    out = run_here("--model", "mlp", "--steps", "300", "--val-every", "50",
                   "--runs-dir", str(tmp_path))
    steps, val, _ = stored(out["run_dir"])
    assert (out["best_val_loss"], out["best_val_step"]) == min(zip(val["loss"], val["step"]))
    # the last validation loss minus the final training loss (the mean of the last 10 steps)
    gap = val["loss"][-1] - statistics.fmean(steps["loss"][-10:])
    assert out["generalization_gap"] == pytest.approx(gap, rel=1e-9)
    assert "stopped_early" not in out and "restored_best" not in out


def test_early_stop_needs_a_patience_of_one_or_more():
    proc = run_cli("--headless", "--model", "mlp", "--early-stop", "0")
    assert proc.returncode == 2 and "--early-stop 0 is out of range" in proc.stderr


# --- the overfitting alarm (watches/generalization.py: OverfitWatch) ---

RISE, FLOOR, IN_A_ROW = 0.10, 0.05, 5       # the documented rule's defaults
TRAIN_WINDOW = 10                           # the training loss is the mean of the last 10 steps


def train_loss_at(steps, step):
    losses = dict(zip(steps["step"], steps["loss"]))
    return statistics.fmean(losses[s] for s in range(step - TRAIN_WINDOW + 1, step + 1))


def alarms(run_dir):
    with open_run(run_dir) as r:
        return r.events("Overfitting")


def test_overfitting_is_said_once_where_validation_rose_and_early_stopping_ends_there(
        tmp_path):
    # 512 examples drawn once: the MLP memorizes them and validation turns within a few
    # hundred steps
    out = run_here("--model", "mlp", "--train-examples", "512", "--steps", "3000",
                   "--val-every", "25", "--early-stop", "8", "--runs-dir", str(tmp_path))
    steps, val, _ = stored(out["run_dir"])
    # early stopping: 8 validations without a new best, then the best weights again
    assert out["steps"] == out["best_val_step"] + 1 + 8 * 25 < 3000
    assert out["final_val_loss"] == out["best_val_loss"] == min(val["loss"])
    (alarm,) = alarms(out["run_dir"])                         # once
    assert out["overfitting_step"] == alarm["step"]
    i = val["step"].index(alarm["step"])
    best = min(zip(val["loss"][:i], val["step"][:i]))         # the best before the alarm
    assert (alarm["best_val_loss"], alarm["best_val_step"]) == best
    first = val["loss"][0]
    bar = max(RISE * best[0], FLOOR * first)
    # the last five validations, each at least the bar above the best
    assert all(v - best[0] >= bar for v in val["loss"][i - IN_A_ROW + 1:i + 1])
    # ... while training loss fell below what it was at the best validation
    assert alarm["train_loss"] == pytest.approx(train_loss_at(steps, alarm["step"]))
    assert alarm["train_loss"] < alarm["train_loss_at_best"] == pytest.approx(
        train_loss_at(steps, best[1]))
    # near the turn: no earlier five validations in a row held the rule
    for j in range(IN_A_ROW, i):
        b = min(val["loss"][:j - IN_A_ROW + 1])
        bar_j = max(RISE * b, FLOOR * first)
        held = all(v - b >= bar_j for v in val["loss"][j - IN_A_ROW + 1:j + 1])
        assert not (held and train_loss_at(steps, val["step"][j]) < train_loss_at(
            steps, val["step"][val["loss"].index(b)]))


@pytest.mark.parametrize("model", ["mlp", "rff", "cnn", "rnn", "transformer"])
def test_ordinary_training_of_each_default_model_raises_no_alarm(model, tmp_path):
    # a validation every 10 steps of early, noisy training: 30 chances for a false alarm
    # (the default MLP does overfit later, from about step 700: the test above and the
    # README show it)
    cfg = resolve(RunConfig(model=model, steps=300, val_every=10, runs_dir=str(tmp_path)))
    trainer, rec, store = run_with(cfg)             # the real trainer and store, in-process
    assert trainer.status == "finished" and len(rec.of(ValMetrics)) == 300 // 10
    assert trainer.summary()["overfitting_step"] is None and alarms(store.run_dir) == []
