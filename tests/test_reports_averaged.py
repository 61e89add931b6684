"""--average reports from real headless runs: the JSON summary's averaged validation losses
against the store's AveragedVal samples (null without --average), the summary row and the
loss chart's "val (averaged)" line, the theory block's ||w_avg - w*|| for a linear run, and
the comparison row."""

import json

import pytest

from lsml_tui.trainer.store.reader import open_run
from lsml_tui.tui.report import write_reports

from tests.conftest import run_here
from tests.test_reports_distributed import Figures, report

LINEAR = ("--model", "linear", "--optimizer", "sgd", "--dim", "8", "--kappa", "10",
          "--examples", "256", "--noise", "0.5", "--batch-size", "8", "--lr", "0.2",
          "--clip", "off", "--device", "cpu")
MLP = ("--model", "mlp", "--layers", "1", "--width", "16", "--steps", "200", "--val-every", "50",
       "--device", "cpu")
LEGEND = "val (averaged)"
AVG_ROW = "final ||w_avg - w*|| (averaged weights)"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Minibatch SGD on least squares with Polyak averaging, an MLP with an EMA, and the
    same MLP without averaging."""
    runs_dir = str(tmp_path_factory.mktemp("averaged-reports") / "runs")
    linear = run_here(*LINEAR, "--steps", "600", "--val-every", "150", "--average", "polyak",
                      "--runs-dir", runs_dir)
    ema = run_here(*MLP, "--average", "ema:0.99", "--runs-dir", runs_dir)
    plain = run_here(*MLP, "--runs-dir", runs_dir)
    return {"linear": linear, "ema": ema, "plain": plain}


def averaged_losses(run_dir) -> list[float]:
    with open_run(run_dir) as store:
        return [s["val_loss"] for s in store.samples("AveragedVal")]


@pytest.mark.parametrize("kind,spec", [("linear", "polyak"), ("ema", "ema:0.99")])
def test_json_averaged_losses_are_the_stores(runs, kind, spec, tmp_path):
    run = runs[kind]
    r = report(run["run_dir"], tmp_path)
    losses = averaged_losses(run["run_dir"])
    assert len(losses) == 4                              # one per validation
    s = r["summary"]
    assert s["final_val_loss_averaged"] == losses[-1]
    assert s["min_val_loss_averaged"] == min(losses)
    # the trainer's own --json summary says the same
    assert run["final_val_loss_averaged"] == pytest.approx(losses[-1])
    assert r["config"]["average"] == run["average"] == spec


def test_json_averaged_losses_are_null_without_average(runs, tmp_path):
    r = report(runs["plain"]["run_dir"], tmp_path)
    assert averaged_losses(runs["plain"]["run_dir"]) == []
    s = r["summary"]
    assert "final_val_loss_averaged" in s and s["final_val_loss_averaged"] is None
    assert "min_val_loss_averaged" in s and s["min_val_loss_averaged"] is None
    assert r["config"].get("average") is None


def test_json_theory_block_has_the_averaged_distance(runs, tmp_path):
    t = report(runs["linear"]["run_dir"], tmp_path)["theory"]
    with open_run(runs["linear"]["run_dir"]) as store:
        last = store.samples("TheorySample")[-1]
    assert t["distance_averaged"] == pytest.approx(last["distance_averaged"])
    assert 0 < t["distance_averaged"] < t["distance"]     # the average sits inside the ball


def test_markdown_summary_row(runs, tmp_path):
    for kind, spec in (("linear", "polyak"), ("ema", "ema:0.99")):
        md_path, json_path = write_reports([runs[kind]["run_dir"]], ["md", "json"],
                                           tmp_path / kind)
        s = json.loads(json_path.read_text())["runs"][0]["summary"]
        md = md_path.read_text()
        assert (f"| validation loss, averaged weights ({spec}): final / min | "
                f"{s['final_val_loss_averaged']:.4g} / {s['min_val_loss_averaged']:.4g} |") in md
        assert (AVG_ROW.replace("|", "\\|") in md) == (kind == "linear")
    md_path, = write_reports([runs["plain"]["run_dir"]], ["md"], tmp_path / "plain")
    assert "averaged weights" not in md_path.read_text()


def test_html_legend_and_theory_row(runs, tmp_path):
    path, = write_reports([runs["linear"]["run_dir"]], ["html"], tmp_path / "linear")
    text = path.read_text()
    page = Figures(text)
    assert LEGEND in page.figures["Loss"]
    assert "averaged ||w_avg - w*||" in page.figures["Distance to w*"]
    assert f"<td>{AVG_ROW}</td>" in text
    assert "validation loss, averaged weights (polyak): final / min" in text
    path, = write_reports([runs["ema"]["run_dir"]], ["html"], tmp_path / "ema")
    assert LEGEND in Figures(path.read_text()).figures["Loss"]
    path, = write_reports([runs["plain"]["run_dir"]], ["html"], tmp_path / "plain")
    text = path.read_text()
    assert LEGEND not in Figures(text).figures["Loss"] and "averaged weights" not in text


def test_a_comparison_has_the_averaged_row(runs, tmp_path):
    dirs = [runs[k]["run_dir"] for k in ("linear", "ema", "plain")]
    md_path, json_path, html_path = write_reports(dirs, ["md", "json", "html"], tmp_path)
    lin, ema, _ = (r["summary"] for r in json.loads(json_path.read_text())["runs"])
    md = md_path.read_text()
    assert (f"| final val loss, averaged | {lin['final_val_loss_averaged']:.4g} (polyak) | "
            f"{ema['final_val_loss_averaged']:.4g} (ema:0.99) | N/A |") in md[:md.index("## Run")]
    legend = Figures(html_path.read_text()).figures["Loss"]
    assert sum(s.endswith(LEGEND) for s in legend) == 2   # one line per averaged run
