"""``lsml-tui lr-find``: the learning-rate range test, through the real command line and
trainer; on the linear family its answer is known (gradient descent is stable only for
lr < 2/L = 2)."""

import json
import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from lsml_tui.trainer.config import RunConfig, load_toml
from lsml_tui.trainer.validate import resolve
from lsml_tui.trainer.tuning.lr_find import BETA, STOP_FACTOR, ramp, smooth, steep, suggest, valley
from tests.conftest import cli_here, run_cli

KEYS = {"suggested_lr", "rule", "why", "lrs", "losses", "smoothed", "stop_reason",
        "stopped_early", "min_lr", "max_lr", "num_steps", "report_dir"}


def lr_find(*args, cwd=None) -> dict:
    """The test's --json answer, run by the CLI's main in this process (the command line in
    its own interpreter is proven below, where it prints)."""
    return json.loads(cli_here("lr-find", "--json", *args, cwd=cwd).strip().splitlines()[-1])


# -- the arithmetic, on plain data ------------------------------------------------------

def test_the_ramp_is_exponential_from_min_to_max():
    lrs = ramp(1e-6, 1e-2, 5)
    ratio = (1e-2 / 1e-6) ** (1 / 4)        # (max/min)^(1/(N-1)) = 10
    assert lrs[0] == 1e-6 and lrs[-1] == pytest.approx(1e-2)
    assert [b / a for a, b in zip(lrs, lrs[1:])] == pytest.approx([ratio] * 4)


def test_the_smoothed_loss_is_a_bias_corrected_ema():
    assert smooth([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])   # no pull towards 0
    # (0.98 * 0.02 * 1 + 0.02 * 3) / (1 - 0.98^2) = 0.0796 / 0.0396 = 2.0101
    assert smooth([1.0, 3.0])[1] == pytest.approx((BETA * 0.02 * 1 + 0.02 * 3) / (1 - BETA ** 2))


def test_the_rules_pick_the_points_they_describe():
    falls = [12 - i for i in range(12)] + [5, 9]     # falls for 12 points, then turns up
    # the longest decreasing run ends at index 11, 12 long; fastai's start is 11 - 12 = -1,
    # and the valley point is -1 + int(12/3) + int(12/6) = -1 + 4 + 2 = 5
    assert valley(falls) == 5
    # slopes -0.1, -0.9, -0.1, -0.1, +0.7: the steepest fall leaves index 1
    assert steep([3.0, 2.9, 2.0, 1.9, 1.8, 2.5]) == 1
    # 20 points: the window drops the first 20 // 10 = 2 and the last 5
    lrs, values = ramp(1e-4, 1.0, 20), [float(20 - i) for i in range(20)]
    lr, why = suggest(lrs, values, 20, "minimum")
    assert lr == lrs[14] / 10 and "points 2 to 14" in why    # the window's lowest: 20 - 5 - 1
    assert suggest(lrs[:1], values[:1], 20, "steep")[0] is None       # one point: none


# -- the range test on least squares, where the answer is known ------------------------

@pytest.fixture(scope="module")
def linear(tmp_path_factory):
    """Gradient descent on the default linear problem (L = 1, mu = 1/100), clipping off so
    every step is a true GD step, the ramp carried past 2/L to 100."""
    runs = tmp_path_factory.mktemp("lrfind") / "runs"
    return lr_find("--model", "linear", "--optimizer", "sgd", "--clip", "off",
                   "--max-lr", "100", "--runs-dir", str(runs))


def test_on_least_squares_the_loss_only_rises_past_2_over_l_and_the_suggestion_is_below(linear):
    lrs, losses, smoothed = linear["lrs"], linear["losses"], linear["smoothed"]
    # f(w) - f* = sum_k lambda_k e_k^2 / 2 and a GD step multiplies e_k by 1 - lr lambda_k,
    # |1 - lr lambda_k| <= 1 for every lambda_k in [1/100, 1] while lr <= 2/L = 2: the loss
    # (read before each step's update) cannot rise after a step below 2
    for i in range(len(lrs) - 1):
        if lrs[i] < 2:
            assert losses[i + 1] <= losses[i] * (1 + 1e-12), (i, lrs[i])
    # so the smoothed loss, a running weighted mean of losses that never rise, never rises
    # either, and the 4x stop can only fire past lr 2, where the loss blows up
    assert linear["stopped_early"] and "passed 4x" in linear["stop_reason"]
    assert lrs[-1] > 2
    rises = [lrs[i] for i in range(len(lrs) - 1) if losses[i + 1] > losses[i]]
    assert rises and min(rises) > 2
    assert smoothed[-1] > STOP_FACTOR * min(smoothed[:-1])
    # the suggestion is a step size gradient descent can take
    assert 0 < linear["suggested_lr"] < 2


def test_the_test_stops_at_the_first_point_past_4x_the_best(linear):
    smoothed = linear["smoothed"]
    best = [min(smoothed[:i + 1]) for i in range(len(smoothed))]
    over = [i for i in range(len(smoothed)) if smoothed[i] > STOP_FACTOR * best[i]]
    assert over == [len(smoothed) - 1]      # the last point recorded, and only it
    assert len(smoothed) < linear["num_steps"]


def test_json_has_the_curve_and_the_ramp_it_was_measured_on(linear):
    assert KEYS <= set(linear)
    lrs, n = linear["lrs"], linear["num_steps"]
    ratio = (linear["max_lr"] / linear["min_lr"]) ** (1 / (n - 1))   # (100 / 1e-7)^(1/99)
    assert lrs[0] == linear["min_lr"] == 1e-7 and n == 100
    assert [b / a for a, b in zip(lrs, lrs[1:])] == pytest.approx([ratio] * (len(lrs) - 1))
    assert len(linear["losses"]) == len(linear["smoothed"]) == len(lrs)
    assert smooth(linear["losses"]) == pytest.approx(linear["smoothed"])
    # the default rule: a tenth of the lr at the lowest smoothed loss in points 100 // 10 = 10
    # to len - 6 (fastai's window)
    window = linear["smoothed"][10:len(lrs) - 5]
    assert linear["rule"] == "minimum"
    assert linear["suggested_lr"] == pytest.approx(lrs[10 + window.index(min(window))] / 10)
    assert set(linear["suggestions"]) == {"minimum", "valley", "steep"}


def test_the_report_is_written_whole(linear):
    report = Path(linear["report_dir"])
    assert report.name.startswith("lr-find-") and report.parent.name == "runs"
    assert sorted(p.name for p in report.iterdir()) == sorted(
        ["config.toml", "lr_find.json", "lr_find.md", "lr_find.svg"])   # no temporary left
    stored = json.loads((report / "lr_find.json").read_text())
    for key in ("lrs", "losses", "smoothed", "suggested_lr", "stop_reason"):
        assert stored[key] == linear[key]
    assert stored["config"]["model"] == "linear" and stored["config"]["clip"] is None
    md = (report / "lr_find.md").read_text()
    assert f"{linear['suggested_lr']:.4g}" in md and "lr_find.svg" in md
    steps = [line for line in md.splitlines() if re.match(r"\| \d+ \| ", line)]
    assert len(steps) == len(linear["lrs"])                    # one row per step
    assert [line.split(" | ")[0] for line in steps if "suggested" in line] == [
        f"| {linear['suggestion_index']}"]
    assert ET.fromstring((report / "lr_find.svg").read_text()).tag.endswith("svg")
    cfg = resolve(RunConfig(**load_toml(report / "config.toml")))   # reruns with --config
    assert (cfg.model, cfg.optimizer, cfg.clip) == ("linear", "sgd", None)


def test_the_terminal_plot_and_the_suggestion_are_printed(tmp_path):
    proc = run_cli("lr-find", "--model", "linear", "--optimizer", "sgd", "--num-steps", "20",
                   "--rule", "steep", "--out", str(tmp_path / "here"))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any("┤" in line for line in lines) and "learning rate" in proc.stdout  # plotext
    assert "\x1b[" not in proc.stdout                     # piped: no colour codes
    assert lines[-2].startswith("suggested lr ") and "steep" in lines[-2]
    assert lines[-1] == f"report: {tmp_path / 'here' / 'lr_find.md'}"


# -- every model family, optimizer and norm ---------------------------------------------

@pytest.mark.parametrize("flags", [
    ["--model", "cnn", "--width", "4", "--norm", "batch", "--optimizer", "momentum"],
    ["--model", "transformer", "--layers", "1", "--d-model", "16", "--heads", "2",
     "--seq-len", "8", "--norm", "rms", "--optimizer", "adamw", "--precision", "bf16"],
    ["--model", "rnn", "--cell", "lstm", "--width", "8", "--seq-len", "10", "--norm", "layer",
     "--optimizer", "rmsprop"],
    ["--model", "mlp", "--width", "8", "--optimizer", "adagrad", "--workers", "2",
     "--schedule", "warmup-cosine"],
], ids=["cnn", "transformer", "rnn", "mlp"])
def test_every_family_runs_a_short_test(tmp_path, flags):
    out = lr_find(*flags, "--num-steps", "6", "--max-lr", "0.1", "--device", "cpu",
                  "--runs-dir", str(tmp_path))
    assert 1 <= len(out["lrs"]) <= 6 and all(math.isfinite(v) for v in out["losses"])
    # the schedule does not bend the ramp: each step's lr is the ramp's
    assert out["lrs"] == pytest.approx(ramp(1e-7, 0.1, 6)[:len(out["lrs"])])
    # 6 points leave none between the first 6 // 10 = 0 and the last 5: the rule takes all
    smoothed = out["smoothed"]
    assert out["suggested_lr"] == pytest.approx(out["lrs"][smoothed.index(min(smoothed))] / 10)


def test_a_nan_ends_the_test_cleanly_even_where_the_run_would_pause(tmp_path):
    # lr 1e36 times gradients of order 1e-2 to 1 puts both layers' weights near 1e34 or
    # more; the head multiplies hidden units of that size by its own: about 1e68, past
    # float32's 3.4e38, so the logits are inf and the next loss NaN. A watched run
    # (--on-diverge pause) would pause there; the test ends, with its one finite point
    out = lr_find("--model", "mlp", "--width", "8", "--optimizer", "sgd", "--clip", "off",
                  "--min-lr", "1e36", "--max-lr", "1e38", "--num-steps", "5",
                  "--on-diverge", "pause", "--runs-dir", str(tmp_path))
    assert out["lrs"] == [1e36] and out["stopped_early"]
    assert "nan" in out["stop_reason"].lower()
    assert out["suggested_lr"] is None and "no suggestion" in out["why"]


@pytest.mark.parametrize("args, words", [
    (["--min-lr", "0"], "--min-lr 0 is out of range"),
    (["--min-lr", "-1"], "--min-lr -1 is out of range"),
    (["--max-lr", "nan"], "--max-lr nan is out of range"),
    (["--min-lr", "abc"], "--min-lr 'abc' is not a number"),
    (["--min-lr", "1e-2", "--max-lr", "1e-3"], "--max-lr 0.001 must be greater than --min-lr"),
    (["--num-steps", "4"], "--num-steps 4 is out of range: must be an integer >= 5"),
    (["--num-steps", "2.5"], "--num-steps '2.5' is not an integer"),
    (["--rule", "median"], "--rule 'median' is not one of"),
    (["--model", "linaer"], "did you mean 'linear'"),
    (["--out", "{tmp}/a-file/report"], "cannot be written (nearest existing: {tmp}/a-file)"),
])
def test_bad_input_is_refused_with_one_line_before_anything_starts(tmp_path, args, words):
    (tmp_path / "a-file").write_text("not a directory")
    args, words = [a.format(tmp=tmp_path) for a in args], words.format(tmp=tmp_path)
    proc = run_cli("lr-find", *args, "--runs-dir", str(tmp_path / "runs"))
    assert proc.returncode == 2
    assert proc.stdout == "" and len(proc.stderr.strip().splitlines()) == 1
    assert words in proc.stderr
    assert not (tmp_path / "runs").exists()
