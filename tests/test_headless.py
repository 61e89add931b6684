"""Headless runs through the real CLI's `main` (in this process: the command line in a fresh
interpreter is proven wherever `run_json` is used): each model learns its default task on CPU."""

import collections
import math

import pytest
import torch

from lsml_tui.trainer.data import AddingTask, stdlib_text
from lsml_tui.trainer.store.reader import open_run
from tests.conftest import run_cli, run_here, run_json

SUMMARY_KEYS = {"run_dir", "status", "steps", "params", "initial_train_loss", "final_train_loss",
                "final_val_loss", "steps_per_second"}
PROFILE_KEYS = {"flops_forward_per_step", "flops_backward_per_step", "peak_saved_activation_bytes",
                "param_bytes", "grad_bytes", "optimizer_state_bytes", "clip_events",
                "last_grad_norm", "mfu"}


def unigram_entropy(text: str) -> float:
    """Cross-entropy (nats) of predicting each character from its frequency alone."""
    counts = collections.Counter(text)
    n = len(text)
    return -sum(c / n * math.log(c / n) for c in counts.values())


def stdlib_train_unigram_entropy() -> float:
    text = stdlib_text()
    return unigram_entropy(text[: int(0.9 * len(text))])


# Margins derived from each task:
# - 10 classes: guessing uniformly costs ln(10); learning must at least halve it.
# - the adding problem: predicting the mean scores Var(U1 + U2) = 2/12 = 1/6; halve it.
# - character LM: predicting characters from frequency alone costs the unigram entropy;
#   a model below it has learned context.
MARGINS = {
    "mlp": lambda: 0.5 * math.log(10),
    "cnn": lambda: 0.5 * math.log(10),
    "rnn": lambda: 0.5 * AddingTask.baseline_mse,
    "transformer": stdlib_train_unigram_entropy,
}


@pytest.mark.parametrize("model", list(MARGINS))
def test_each_model_learns_its_default_task_headless(model, runs_dir):
    summary = run_here("--model", model, "--steps", "300", "--runs-dir", str(runs_dir))
    assert SUMMARY_KEYS <= summary.keys()
    assert all(summary[k] is not None for k in PROFILE_KEYS), summary
    assert summary["flops_backward_per_step"] > summary["flops_forward_per_step"] > 0
    assert summary["status"] == "finished" and summary["steps"] == 300
    assert summary["final_train_loss"] < MARGINS[model]()
    assert summary["final_train_loss"] < summary["initial_train_loss"]
    assert summary["final_val_loss"] < summary["initial_train_loss"]
    with open_run(summary["run_dir"]) as r:
        info, steps, val = r.info(), r.steps(), r.val()
    assert info.status == "finished" and info.summary == summary
    assert steps["step"] == list(range(300))
    assert steps["loss"][0] == summary["initial_train_loss"]
    assert val["step"][-1] == 299 and val["loss"][-1] == summary["final_val_loss"]


def test_the_stored_config_reruns_the_same_run(runs_dir, tmp_path):
    args = ("--model", "mlp", "--layers", "1", "--width", "16", "--steps", "20")
    first = run_json(*args, "--runs-dir", str(runs_dir))
    again = run_here("--config", f"{first['run_dir']}/config.toml", "--runs-dir", str(tmp_path / "b"))
    assert again["initial_train_loss"] == first["initial_train_loss"]
    assert again["final_train_loss"] == first["final_train_loss"]


def test_an_unavailable_device_is_refused_before_anything_is_written(runs_dir):
    missing = f"cuda:{torch.cuda.device_count()}"      # one past the last GPU, on any machine
    proc = run_cli("--headless", "--device", missing, "--runs-dir", str(runs_dir))
    assert proc.returncode == 2
    assert f"--device '{missing}' is not available" in proc.stderr and "cpu" in proc.stderr
    assert not runs_dir.exists()
