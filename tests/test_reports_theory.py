"""--model linear reports from real headless runs: the JSON's theory block against the
stored summary, the "Theory (least squares)" tables and the distance chart, an MLP run
that has none of it, and a run still going whose block comes from its last TheoryInfo."""

import json
import math

import pytest

from lsml_tui.trainer.events import CommandApplied, RunStarted, TheoryInfo, TheorySample
from lsml_tui.trainer.store.writer import RunStore
from lsml_tui.trainer.store.reader import open_run
from lsml_tui.tui.report import write_reports
from lsml_tui.tui.report.theory_charts import predicted
from lsml_tui.tui.report.theory import CLIP_NOTE, rate

from tests.conftest import run_here
from tests.test_reports_distributed import Figures, report

LINEAR = ("--model", "linear", "--optimizer", "sgd", "--dim", "8", "--kappa", "10",
          "--clip", "off", "--device", "cpu")
THEORY_KEYS = {"L", "mu", "kappa", "optimizer", "lr", "rate_theory", "rate_measured", "lr_limit",
               "distance", "noise_ball_theory", "noise_ball_measured", "clipped_steps",
               "distance_averaged"}
CHART = "Distance to w*"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Full-batch gradient descent, minibatch SGD (a noise ball) and an MLP."""
    runs_dir = str(tmp_path_factory.mktemp("theory-reports") / "runs")
    full = run_here(*LINEAR, "--lr", "0.5", "--steps", "200", "--runs-dir", runs_dir)
    noisy = run_here(*LINEAR, "--batch-size", "8", "--lr", "0.2", "--examples", "256",
                     "--noise", "0.5", "--steps", "300", "--runs-dir", runs_dir)
    mlp = run_here("--model", "mlp", "--steps", "30", "--layers", "1", "--width", "16",
                   "--device", "cpu", "--runs-dir", runs_dir)
    return {"full": full["run_dir"], "noisy": noisy["run_dir"], "mlp": mlp["run_dir"]}


def section(md: str) -> str:
    return md[md.index("# Theory (least squares)"):md.index("# Config")]


@pytest.mark.parametrize("kind", ["full", "noisy"])
def test_json_theory_block_is_the_stored_summarys(runs, kind, tmp_path):
    t = report(runs[kind], tmp_path)["theory"]
    with open_run(runs[kind]) as store:
        stored = store.info().summary["theory"]
        info = store.samples("TheoryInfo")[-1]
    assert t == stored and set(t) == THEORY_KEYS
    assert (t["L"], t["kappa"], t["optimizer"]) == (1.0, pytest.approx(10.0), "sgd")
    assert t["rate_theory"] == info["rate_theory"] and t["clipped_steps"] == 0
    if kind == "full":      # gradient descent at lr 0.5: max |1 - lr lam| = 1 - 0.5 / 10
        assert t["rate_theory"] == pytest.approx(0.95) and t["noise_ball_theory"] is None
    else:
        assert t["noise_ball_theory"] == info["noise_ball"] > 0


def test_json_theory_is_null_for_an_mlp_run(runs, tmp_path):
    r = report(runs["mlp"], tmp_path)
    assert "theory" in r and r["theory"] is None


def test_markdown_theory_table_shows_the_jsons_values(runs, tmp_path):
    for kind in ("full", "noisy"):
        md_path, json_path = write_reports([runs[kind]], ["md", "json"], tmp_path / kind)
        t = json.loads(json_path.read_text())["runs"][0]["theory"]
        table = section(md_path.read_text())
        assert (f"| rate per step: theory / measured | {rate(t['rate_theory'])} / "
                f"{rate(t['rate_measured'])} |") in table
        assert f"| optimizer, lr | sgd, lr {t['lr']:g} |" in table
        assert "| kappa = L / mu | 10 |" in table
        assert "| clipped steps | 0 |" in table and CLIP_NOTE not in table
        assert ("| noise ball E\\|\\|w - w*\\|\\|^2" in table) == (kind == "noisy")
    md_path, = write_reports([runs["mlp"]], ["md"], tmp_path / "mlp")
    assert "Theory (least squares)" not in md_path.read_text()


def test_html_has_the_theory_section_and_the_distance_chart(runs, tmp_path):
    for kind in ("full", "noisy"):
        path, = write_reports([runs[kind]], ["html"], tmp_path / kind)
        page = Figures(path.read_text())
        assert "Theory (least squares)" in page.h2
        chart = page.figures[CHART]
        assert chart[0] == "<svg>" and "Distance to w*" in chart
        assert {"measured ||w - w*||", "theory: distance · rate^(t - step)"} <= set(chart)
        assert any(s.startswith("noise ball") for s in chart) == (kind == "noisy")
    path, = write_reports([runs["mlp"]], ["html"], tmp_path / "mlp")
    page = Figures(path.read_text())
    assert "Theory (least squares)" not in page.h2 and CHART not in page.figures


def test_a_comparison_shows_each_runs_rates(runs, tmp_path):
    md_path, json_path, html_path = write_reports(
        [runs["full"], runs["noisy"], runs["mlp"]], ["md", "json", "html"], tmp_path)
    full, noisy, _ = (r["theory"] for r in json.loads(json_path.read_text())["runs"])
    md = md_path.read_text()
    assert (f"| rate per step: theory / measured | {rate(full['rate_theory'])} / "
            f"{rate(full['rate_measured'])} | {rate(noisy['rate_theory'])} / "
            f"{rate(noisy['rate_measured'])} | N/A |") in md[:md.index("## Run")]
    assert md.count("Theory (least squares)") == 2
    figures = Figures(html_path.read_text()).figures
    assert sum(name.startswith(CHART) for name in figures) == 2      # one per linear run


def still_going(tmp_path):
    """A linear run this process is still 'running': gradient descent at lr 0.5 for 10
    steps, then lr 1 (a second TheoryInfo), one clipped step, no final summary."""
    st = RunStore.create(tmp_path, {"model": "linear", "optimizer": "sgd", "norm": "none",
                                    "batch_size": 64}, "")
    st.record_event(RunStarted(0, st.run_id, str(st.run_dir), {}, 8, "cpu"))
    d = 1.0
    for step in range(20):
        if step in (0, 10):
            lr = 0.5 if step == 0 else 1.0
            st.record_sample(TheoryInfo(step, 1.0, 0.1, 10.0, "sgd", lr, None, 1 - lr * 0.1,
                                        2.0, None, d))
        st.record_sample(TheorySample(step, d))
        st.record_step(step, 100.0 + step, d * d / 2, 0.5 if step < 10 else 1.0, d, d,
                       step == 12, 64.0)
        d *= 0.95 if step < 10 else 0.9
    st.record_event(CommandApplied(10, "lr 1", "lr 0.5 -> 1", {"lr": 1.0}))
    st.record_clip(12, 3.0, 1.0, 1 / 3)
    st.close()
    return st.run_dir, d / 0.9                               # the distance at step 19


def test_a_run_still_going_takes_its_theory_from_the_last_TheoryInfo(tmp_path):
    run_dir, last = still_going(tmp_path)
    json_path, md_path, html_path = write_reports([run_dir], ["json", "md", "html"],
                                                  tmp_path / "out")
    r, = json.loads(json_path.read_text())["runs"]
    assert r["partial"] is True
    assert r["theory"] == {"L": 1.0, "mu": 0.1, "kappa": 10.0, "optimizer": "sgd", "lr": 1.0,
                           "rate_theory": pytest.approx(0.9), "rate_measured": None,
                           "lr_limit": 2.0, "distance": pytest.approx(last),
                           "noise_ball_theory": None, "noise_ball_measured": None,
                           "clipped_steps": 1, "distance_averaged": None}
    table = section(md_path.read_text())
    assert f"| rate per step: theory / measured | {rate(0.9)} / N/A |" in table
    assert f"| clipped steps | 1 ({CLIP_NOTE}) |" in table
    assert Figures(html_path.read_text()).figures[CHART][0] == "<svg>"


def test_the_predicted_line_runs_from_each_TheoryInfo_within_the_view():
    info = {"step": 10, "distance": 0.5, "rate_theory": 0.9}
    xs, ys = predicted(info, 19, 1e-6, 10.0)
    assert xs == [10, 19] and ys == pytest.approx([0.5, 0.5 * 0.9 ** 9])
    # a fast rate leaves the view: the line stops at the last step inside it
    xs, ys = predicted({**info, "rate_theory": 0.1}, 1000, 1e-3, 10.0)
    assert xs == [10, 12] and ys == pytest.approx([0.5, 0.005])
    # a diverging one (lr beyond the limit) is cut at the top, without overflowing
    xs, ys = predicted({**info, "rate_theory": 3.0}, 100_000, 1e-3, 10.0)
    assert xs == [10, 12] and ys[-1] <= 10.0
    assert predicted({**info, "rate_theory": None}, 19, 1e-6, 10.0) == ([], [])
    assert math.isfinite(predicted({**info, "rate_theory": 1.0}, 19, 1e-6, 10.0)[1][-1])
