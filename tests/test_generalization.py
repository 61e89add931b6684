"""Generalization (issue 23, first part): the best validation loss and its step, the gap,
early stopping with the best weights kept. Every expected number is the store's or
arithmetic on it."""

import statistics

import pytest

from lsml_tui.trainer.store.reader import open_run
from tests.conftest import run_cli, run_json

# the default MLP memorizes its finite training set: validation turns within a few
# hundred steps at Adam 3e-3
MLP = ("--model", "mlp", "--steps", "5000", "--val-every", "50")


def stored(run_dir):
    with open_run(run_dir) as r:
        return r.steps(), r.val(), [e["message"] for e in r.events("Notice")]


def test_early_stopping_stops_patience_validations_after_the_best_and_keeps_its_weights(
        tmp_path):
    out = run_json(*MLP, "--early-stop", "3", "--runs-dir", str(tmp_path))
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
    out = run_json(*MLP, "--early-stop", "3", "--no-restore-best", "--runs-dir", str(tmp_path))
    _, val, _ = stored(out["run_dir"])
    assert out["stopped_early"] is True and "restored_best" not in out
    assert out["final_val_loss"] == val["loss"][-1] > out["best_val_loss"]


def test_every_run_says_its_best_validation_and_its_gap(tmp_path):
    out = run_json("--model", "mlp", "--steps", "300", "--val-every", "50",
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
