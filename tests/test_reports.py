"""Reports, run history and replay: every format from real runs, read back and checked
against the run store; killed and still-running runs; comparisons; the CLI."""

import asyncio
import csv
import json
import sqlite3
import statistics
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from lsml_tui.trainer.events import CommandApplied, FlopTable, MemorySample, RunStarted
from lsml_tui.trainer.store.schema import DB_NAME
from lsml_tui.trainer.store.writer import RunStore
from lsml_tui.trainer.store.reader import list_runs, open_run
from lsml_tui.tui.report import write_reports

from tests.conftest import run_cli, run_here
from tests.test_dashboard import until

DOCUMENTED_KEYS = {"id", "run_dir", "status", "partial", "model", "optimizer", "norm", "device",
                   "precision", "params", "created", "ended", "config", "summary", "flops", "memory", "timing",
                   "system", "timeline", "distributed", "theory", "sharpness", "noise_scale"}
SUMMARY_KEYS = {"steps", "last_step", "initial_train_loss", "final_train_loss", "min_train_loss",
                "final_val_loss", "min_val_loss", "last_grad_norm", "max_grad_norm",
                "clip_events", "skipped_steps", "steps_per_second", "switches",
                "final_val_loss_averaged", "min_val_loss_averaged", "best_val_step",
                "generalization_gap", "stopped_early", "restored_best", "final_val_loss_restored",
                "overfitting_step"}
# loss, gradients, saved per module, memory breakdown, FLOPs, phases; system load where sampled
CHARTS_OF_A_PROFILED_RUN = 6


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two real headless runs of the MLP: adam with tight clipping, and sgd."""
    runs = tmp_path_factory.mktemp("reports") / "runs"
    common = ("--model", "mlp", "--steps", "120", "--sample-every", "40", "--val-every", "40",
              "--runs-dir", str(runs))
    a = run_here(*common, "--optimizer", "adam", "--clip", "0.3")
    b = run_here(*common, "--optimizer", "sgd")
    return a["run_dir"], b["run_dir"]


class Tags(HTMLParser):
    def __init__(self, text):
        super().__init__()
        self.tags, self.refs = [], []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.refs += [v for k, v in attrs if k.split(":")[-1] in ("href", "src") and v]


def test_json_holds_the_documented_keys_with_the_stores_values(two_runs, tmp_path):
    run_dir = two_runs[0]
    path, = write_reports([run_dir], ["json"], tmp_path)
    doc = json.loads(path.read_text())
    assert doc["schema_version"] == 1
    r, = doc["runs"]
    assert set(r) == DOCUMENTED_KEYS and set(r["summary"]) == SUMMARY_KEYS
    with open_run(run_dir) as store:
        info, steps, clips, val = store.info(), store.steps(), store.clips(), store.val()
        flops, = store.samples("FlopTable")
        memory = store.samples("MemorySample")
    s = r["summary"]
    assert (r["id"], r["status"], r["partial"]) == (info.id, "finished", False)
    assert (r["device"], r["precision"]) == ("cpu", "fp32")    # auto on a CPU: fp32
    assert s["steps"] == len(steps["step"]) == 120
    assert s["final_train_loss"] == pytest.approx(statistics.fmean(steps["loss"][-10:]))
    assert s["best_val_step"] == min(zip(val["loss"], val["step"]))[1]
    # the last validation loss minus the final training loss (the mean of the last 10)
    assert s["generalization_gap"] == pytest.approx(val["loss"][-1]
                                                    - statistics.fmean(steps["loss"][-10:]))
    assert (s["stopped_early"], s["restored_best"], s["final_val_loss_restored"]) == \
        (None, None, None)                          # no --early-stop, no --restore-best
    assert s["final_val_loss"] == val["loss"][-1]
    assert s["clip_events"] == len(clips["step"]) > 0          # --clip 0.3 fires
    assert s["max_grad_norm"] == max(steps["grad_norm"])
    # each step took batch / examples_per_second seconds
    seconds = sum(info.config["batch_size"] / e for e in steps["examples_per_second"])
    assert s["steps_per_second"] == pytest.approx(120 / seconds)
    assert r["flops"]["forward_per_step"] == flops["forward"]
    assert r["flops"]["backward_per_step"] == flops["backward"]
    assert r["memory"]["param_bytes"] == memory[-1]["param_bytes"]
    assert r["memory"]["peak_saved_activation_bytes"] == max(m["saved_activation_bytes"]
                                                             for m in memory)
    assert [e["kind"] for e in r["timeline"]] == ["RunStarted", "RunFinished"]


def test_csv_has_a_header_and_one_row_per_recorded_step(two_runs, tmp_path):
    run_dir = two_runs[0]
    path, = write_reports([run_dir], ["csv"], tmp_path)
    rows = list(csv.DictReader(path.open()))
    with open_run(run_dir) as store:
        steps, val = store.steps(), store.val()
    assert [int(r["step"]) for r in rows] == steps["step"]
    assert [float(r["loss"]) for r in rows] == steps["loss"]
    with_val = {int(r["step"]): float(r["val_loss"]) for r in rows if r["val_loss"]}
    assert with_val == dict(zip(val["step"], val["loss"]))


def test_html_is_self_contained_with_one_svg_per_chart(two_runs, tmp_path):
    path, = write_reports([two_runs[0]], ["html"], tmp_path)
    page = Tags(path.read_text())
    with open_run(two_runs[0]) as store:
        system = 1 if store.samples("SystemSample") else 0     # sampled once a second
    assert page.tags.count("figure") == page.tags.count("svg") == CHARTS_OF_A_PROFILED_RUN + system
    assert all(ref.startswith("#") for ref in page.refs), page.refs   # nothing outside itself
    assert not {"script", "link", "img", "iframe"} & set(page.tags)


def test_markdown_holds_the_summary_table(two_runs, tmp_path):
    path, = write_reports([two_runs[0]], ["md"], tmp_path)
    text = path.read_text()
    assert "| metric | value |" in text
    assert "| steps recorded | 120 |" in text
    assert "| module | forward | backward | bwd/fwd | share |" in text


def test_a_comparison_overlays_both_runs(two_runs, tmp_path):
    paths = write_reports(list(two_runs), ["html", "json", "csv"], tmp_path)
    ids = [Path(d).name for d in two_runs]
    html = paths[0].read_text()
    page = Tags(html)
    assert page.tags.count("svg") == 2                         # loss and gradient norm, overlaid
    loss_svg = html[html.index("<svg"):html.index("</svg>")]
    assert all(i in loss_svg for i in ids)                     # both runs in the loss chart
    doc = json.loads(paths[1].read_text())
    assert [r["id"] for r in doc["runs"]] == ids
    assert [r["optimizer"] for r in doc["runs"]] == ["adam", "sgd"]
    rows = list(csv.DictReader(paths[2].open()))
    assert len(rows) == 120 + 120 and {r["run_id"] for r in rows} == set(ids)


def hand_written_run(tmp_path, pid=None):
    """A run whose every number is known: 20 steps, a switch at step 10, one NaN gradient."""
    st = RunStore.create(tmp_path, {"model": "mlp", "optimizer": "adam", "norm": "none",
                                    "batch_size": 32}, "")
    st.record_event(RunStarted(0, st.run_id, str(st.run_dir), {}, 1000, "cpu"))
    for step in range(20):
        grad = float("nan") if step == 15 else 1.0 + step
        # 32 examples at 64 examples/s: every step took 0.5 s
        st.record_step(step, 100.0 + step, 3.0 - step * 0.1, 1e-3, grad, grad, False, 64.0)
    st.record_event(CommandApplied(10, "optimizer sgd", "optimizer adam -> sgd", {"optimizer": "sgd"}))
    st.record_sample(FlopTable(0, 300, 600, {"fc": [300, 600]}, [32, 4]))
    st.record_sample(MemorySample(10, 400, 400, 800, 96, None))
    st.close()
    if pid is not None:
        con = sqlite3.connect(st.run_dir / DB_NAME)
        with con:
            con.execute("UPDATE run SET pid = ?", (pid,))
        con.close()
    return st.run_dir


def dead_pid():
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    return int(child.stdout)


def test_a_killed_run_reports_what_it_recorded(tmp_path):
    run_dir = hand_written_run(tmp_path, pid=dead_pid())
    json_path, md_path, html_path = write_reports([run_dir], ["json", "md", "html"],
                                                  tmp_path / "out")
    html = html_path.read_text()
    assert "optimizer sgd" in html[html.index("<svg"):html.index("</svg>")]   # the switch marker
    r, = json.loads(json_path.read_text())["runs"]
    s = r["summary"]
    assert (r["status"], r["partial"]) == ("killed", False)
    assert s["steps"] == 20 and s["skipped_steps"] == 1         # the NaN gradient at step 15
    assert s["steps_per_second"] == pytest.approx(20 / (20 * 0.5))
    losses = [3.0 - step * 0.1 for step in range(20)]
    assert s["final_train_loss"] == pytest.approx(statistics.fmean(losses[-10:]))
    assert s["max_grad_norm"] == 1.0 + 19 and s["switches"] == 1
    assert r["flops"]["backward_over_forward"] == 600 / 300
    assert r["memory"]["optimizer_state_bytes"] == 800
    assert "step 10: optimizer adam -> sgd" in [e["text"] for e in r["timeline"]]
    assert "status **killed**" in md_path.read_text()


def test_a_run_still_going_is_marked_partial(tmp_path):
    run_dir = hand_written_run(tmp_path)                        # this process is alive: running
    html_path, json_path = write_reports([run_dir], ["html", "json"], tmp_path / "out")
    r, = json.loads(json_path.read_text())["runs"]
    assert (r["status"], r["partial"]) == ("running", True)
    assert "Partial report" in html_path.read_text()


def test_reports_are_renamed_into_place(tmp_path, monkeypatch):
    run_dir = hand_written_run(tmp_path, pid=dead_pid())
    out = tmp_path / "out"
    path, = write_reports([run_dir], ["md"], out)
    before = path.read_text()

    def crash(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr("os.replace", crash)
    with pytest.raises(OSError):
        write_reports([run_dir], ["md"], out)
    assert path.read_text() == before                           # the old report is intact
    assert [p.name for p in out.iterdir()] == ["report.md"]     # no temporary file left


def test_cli_report_runs_and_refusals(two_runs, tmp_path):
    runs_dir = str(tmp_path / "cli")
    proc = run_cli("report", two_runs[0], "--format", "md,json", "--out", runs_dir)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [f"{runs_dir}/report.md", f"{runs_dir}/report.json"]
    listing = run_cli("runs", "--runs-dir", str(Path(two_runs[0]).parent))
    ids = [Path(d).name for d in two_runs]
    assert listing.returncode == 0 and all(i in listing.stdout for i in ids)
    assert listing.stdout.count("finished") == 2 and "sgd" in listing.stdout
    for args, says in [(("report", two_runs[0], "--format", "pdf"), "--format 'pdf'"),
                       (("report", str(tmp_path)), "is not a run directory"),
                       (("open", str(tmp_path)), "is not a run directory"),
                       (("runs", "--runs-dir", str(tmp_path / "nope")), "is not a directory")]:
        bad = run_cli(*args)
        assert bad.returncode == 2 and says in bad.stderr and len(bad.stderr.splitlines()) == 1


def test_open_replays_a_run_read_only_with_every_panel_filled(two_runs):
    from lsml_tui.tui.app import LsmlApp
    from lsml_tui.tui.panels import FlopsPanel, LossPanel, MemoryPanel, StatusLine
    from lsml_tui.tui.screens import ChoiceScreen, ValueScreen
    run_dir = two_runs[0]
    with open_run(run_dir) as store:
        info, clips, val = store.info(), store.clips(), store.val()

    async def main():
        app = LsmlApp.replay(run_dir)
        async with app.run_test(size=(140, 42)) as pilot:
            await until(pilot, lambda: app.query_one(StatusLine).state["status"]
                        == "finished (replay)", what="the replay to finish")
            loss = app.query_one(LossPanel)
            assert loss.train.count == info.steps and loss.val.count == len(val["step"])
            assert app.query_one("GradientsPanel").clip_count == len(clips["step"])
            assert app.query_one(FlopsPanel).table is not None
            assert app.query_one(MemoryPanel).latest is not None
            assert app.query_one(StatusLine).state["status"] == "finished (replay)"
            def refusals():
                return {n.identity for n in app._notifications if "read-only replay" in n.message}
            for key in ("o", "n", "l", "c", "space", "w", "s", "t", "m", "r"):
                before = refusals()                              # no trainer: each refused
                await pilot.press(key)
                assert not isinstance(app.screen, (ChoiceScreen, ValueScreen)), key
                assert refusals() - before, f"{key} was not refused with a hint"
            assert app.query_one(StatusLine).state["status"] == "finished (replay)"
            await pilot.press("e")
            report = Path(run_dir) / "report.json"             # renamed into place whole
            await until(pilot, report.exists, what="the exported report")
            assert json.loads(report.read_text())["runs"][0]["id"] == info.id
            await pilot.press("q")
    asyncio.run(main())
    assert list_runs(str(Path(run_dir).parent))[0].status == "finished"   # replay wrote nothing
