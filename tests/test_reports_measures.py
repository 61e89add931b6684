"""Sharpness and noise-scale reports from a real headless run: the JSON blocks against the
store's samples with the arithmetic written out, the HTML sections with their charts, the
Markdown tables, the comparison rows, and null blocks for a run that measured neither."""

import pytest

from lsml_tui.tui.report import write_reports

from tests.conftest import run_here
from tests.test_reports_distributed import Figures, report
from lsml_tui.trainer.store.reader import open_run

MLP = ("--model", "mlp", "--layers", "1", "--width", "16", "--steps", "120", "--val-every", "60",
       "--batch-size", "32", "--optimizer", "sgd", "--lr", "0.1", "--device", "cpu")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    runs_dir = str(tmp_path_factory.mktemp("measure-reports") / "runs")
    measured = run_here(*MLP, "--sharpness-every", "40", "--noise-scale-every", "20",
                        "--runs-dir", runs_dir)
    plain = run_here(*MLP, "--runs-dir", runs_dir)
    return {"measured": measured, "plain": plain}


def stored(run_dir, kind) -> list[dict]:
    with open_run(run_dir) as store:
        return store.samples(kind)


def test_json_sharpness_block_is_the_stores(runs, tmp_path):
    run = runs["measured"]
    s = report(run["run_dir"], tmp_path)["sharpness"]
    samples = stored(run["run_dir"], "SharpnessSample")
    assert len(samples) == s["measurements"] == 3           # after steps 40, 80, 120
    last = samples[-1]
    assert s["last"] == last["sharpness"] == run["sharpness"]
    assert s["threshold"] == last["threshold"] == pytest.approx(2 / 0.1)   # SGD: 2/lr = 20
    assert s["ratio"] == pytest.approx(last["sharpness"] / 20)
    assert s["max"] == max(x["sharpness"] for x in samples)
    assert s["above_threshold"] == sum(x["sharpness"] > x["threshold"] for x in samples)
    assert s["preconditioned"] is False


def test_json_noise_block_is_the_stores(runs, tmp_path):
    run = runs["measured"]
    n = report(run["run_dir"], tmp_path)["noise_scale"]
    samples = stored(run["run_dir"], "NoiseSample")
    assert len(samples) == n["measurements"] == 6           # every 20 of 120 steps
    b = samples[-1]["noise_scale"]
    assert n["last"] == b == run["noise_scale"] and b is not None
    assert (n["batch"], n["part"]) == (32, 8)               # 32 examples in 4 parts of 8
    assert n["steps_factor"] == pytest.approx(1 + b / 32)
    assert n["examples_factor"] == pytest.approx(1 + 32 / b)


def test_null_blocks_without_the_flags(runs, tmp_path):
    r = report(runs["plain"]["run_dir"], tmp_path)
    assert r["sharpness"] is None and r["noise_scale"] is None


def test_html_and_markdown_sections(runs, tmp_path):
    html, md = write_reports([runs["measured"]["run_dir"]], ["html", "md"], tmp_path)
    figures = Figures(html.read_text())
    for title in ("Sharpness (edge of stability)", "Gradient noise scale"):
        assert title in figures.h2 and figures.figures[title][0] == "<svg>"
    text = md.read_text()
    assert "## Sharpness (edge of stability)" in text and "## Gradient noise scale" in text
    assert "| B_simple vs batch |" in text and "vs 32 |" in text
    plain, = write_reports([runs["plain"]["run_dir"]], ["html"], tmp_path / "plain")
    assert "Gradient noise scale" not in Figures(plain.read_text()).h2


def test_comparison_rows(runs, tmp_path):
    md, = write_reports([runs["measured"]["run_dir"], runs["plain"]["run_dir"]], ["md"], tmp_path)
    rows = {line.split("|")[1].strip(): line for line in md.read_text().splitlines()
            if line.startswith("| ")}
    assert rows["noise scale vs batch"].rstrip(" |").endswith("N/A")   # the plain run
    assert "/ 20 |" in rows["sharpness / limit"]            # the limit 2/lr = 2/0.1
