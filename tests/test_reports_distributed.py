"""Data-parallel reports from real 2-rank runs: the JSON's distributed block against the
store's DistSamples, the per-rank tables, chart and CSV, an allreduce-against-ps
comparison, and a single-process run that has none of it."""

import csv
import json
import statistics
from collections import Counter
from html.parser import HTMLParser

import pytest

from lsml_tui.trainer.store.reader import open_run
from lsml_tui.tui.format import nbytes
from lsml_tui.tui.report import write_reports

from tests.conftest import run_here, run_json

SMALL = ("--model", "mlp", "--layers", "1", "--width", "16", "--device", "cpu")
N = 2                                   # ranks
PARAMS = (32 * 16 + 16) + (16 * 10 + 10)   # 1x16 MLP, 32 inputs, 10 classes: 528 + 170 = 698
M = 4 * PARAMS                          # fp32 gradient payload: 4 * 698 = 2792 bytes
SAMPLED = 60 // 10                      # steps 5, 15, ..., 55: every 10, offset by half
PARTS = ("compute_s", "comm_s", "wait_s", "step_s")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two real 2-worker runs, --sync allreduce and --sync ps, and one single-process run."""
    runs_dir = str(tmp_path_factory.mktemp("dist-reports") / "runs")
    common = (*SMALL, "--steps", "60", "--sample-every", "10", "--runs-dir", runs_dir)
    allreduce = run_json(*common, "--workers", str(N), "--sync", "allreduce")
    ps = run_json(*common, "--workers", str(N), "--sync", "ps")
    single = run_here(*SMALL, "--steps", "20", "--sample-every", "10", "--runs-dir", runs_dir)
    return {"allreduce": allreduce["run_dir"], "ps": ps["run_dir"], "single": single["run_dir"]}


def report(run_dir, tmp_path) -> dict:
    path, = write_reports([run_dir], ["json"], tmp_path)
    return json.loads(path.read_text())["runs"][0]


class Figures(HTMLParser):
    """Each <figure>'s aria-label and the text inside it."""
    def __init__(self, text):
        super().__init__()
        self.figures, self.h2, self._in, self._h2 = {}, [], None, False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        if tag == "figure":
            self._in = dict(attrs)["aria-label"]
            self.figures[self._in] = []
        self._h2 = tag == "h2"
        if self._in and tag == "svg":
            self.figures[self._in].append("<svg>")

    def handle_endtag(self, tag):
        if tag == "figure":
            self._in = None

    def handle_data(self, data):
        if self._in:
            self.figures[self._in].append(data)
        if self._h2:
            self.h2.append(data)
            self._h2 = False


@pytest.mark.parametrize("sync", ["allreduce", "ps"])
def test_json_distributed_block_is_the_stores_samples_averaged(runs, sync, tmp_path):
    r = report(runs[sync], tmp_path)
    d = r["distributed"]
    assert r["params"] == PARAMS
    with open_run(runs[sync]) as store:
        samples, config = store.samples("DistSample"), store.info().config
    assert len(samples) == d["samples"] == SAMPLED
    assert (d["world_size"], d["sync"], d["straggle"]) == (N, sync, None)
    assert [r["rank"] for r in d["ranks"]] == list(range(N))
    for rank, got in enumerate(d["ranks"]):
        rows = [s["ranks"][rank] for s in samples]
        means = {k: statistics.fmean(r[k] for r in rows) for k in PARTS}
        assert {k: got[k] for k in PARTS} == pytest.approx(means)
        assert got["comm_share"] == pytest.approx(means["comm_s"] / means["step_s"])
        assert got["wait_share"] == pytest.approx(means["wait_s"] / means["step_s"])
    counts = Counter(s["slowest"] for s in samples)
    assert counts[d["slowest_rank"]] == max(counts.values())
    # the synchronous step: the slowest rank's step time, averaged over the samples
    assert d["step_s_measured"] == pytest.approx(
        statistics.fmean(max(r["step_s"] for r in s["ranks"]) for s in samples))
    assert d["step_s_predicted"] is None                        # no --straggle
    assert d["payload_bytes"] == M
    if sync == "allreduce":   # ring: 2(N-1)/N * M = 2 * 1 / 2 * 2792 = 2792 per rank and link
        assert d["wire_bytes_per_rank"] == d["busiest_link_bytes"] == 2 * (N - 1) / N * M == M
    else:                     # ps: each worker 2M = 5584; rank 0's link 2(N-1) * M = 5584
        assert d["wire_bytes_per_rank"] == 2 * M
        assert d["busiest_link_bytes"] == 2 * (N - 1) * M == 2 * M
    algbw = statistics.fmean(s["algbw"] for s in samples)
    assert d["algbw"] == pytest.approx(algbw)
    # busbw = algbw * the link factor: 2(N-1)/N = 1 for the ring, 2(N-1) = 2 for ps
    factor = 2 * (N - 1) / N if sync == "allreduce" else 2 * (N - 1)
    assert d["busbw"] == pytest.approx(factor * algbw)
    assert d["noise_scale"] == [s["noise_scale"] for s in samples
                                 if s["noise_scale"] is not None][-1]
    assert d["global_batch"] == N * config["batch_size"] == 2 * 128
    assert d["replicas_agree"] is True


def test_markdown_and_html_have_the_per_rank_table_and_chart(runs, tmp_path):
    md_path, html_path = write_reports([runs["allreduce"]], ["md", "html"], tmp_path)
    md = md_path.read_text()
    section = md[md.index("## Data parallel"):md.index("## Per rank")]  # the time table
    assert "| rank | compute | comm | wait | step | comm share | wait share |  |" in section
    rank_rows = [line for line in section.splitlines() if line.startswith(("| 0 |", "| 1 |"))]
    assert len(rank_rows) == N and sum("slowest" in row for row in rank_rows) == 1
    # ring all-reduce of M = 2792 bytes on 2 ranks: 2(N-1)/N * M = 2792 bytes per link
    assert f"| bytes through the busiest link per step | {nbytes(M)} (ring 2(N-1)/N·M) |" \
        in section
    assert "| synchronous step: measured / predicted |" in section
    page = Figures(html_path.read_text())
    assert "Data parallel" in page.h2
    chart = page.figures["Time per rank"]
    assert chart[0] == "<svg>" and "rank 0" in chart and "rank 1" in chart
    assert {"compute", "comm", "wait"} <= set(chart)            # the legend


def test_ranks_csv_has_one_row_per_sampled_step_and_rank(runs, tmp_path):
    paths = write_reports([runs["ps"]], ["csv"], tmp_path)
    assert [p.name for p in paths] == ["report.csv", "report-ranks.csv"]
    rows = list(csv.DictReader(paths[1].open()))
    with open_run(runs["ps"]) as store:
        samples = store.samples("DistSample")
    assert len(rows) == SAMPLED * N == 12
    expected = [(s["step"], r["rank"], r["comm_s"], r["payload_bytes"])
                for s in samples for r in s["ranks"]]
    assert [(int(r["step"]), int(r["rank"]), float(r["comm_s"]), int(r["payload_bytes"]))
            for r in rows] == expected


def test_an_allreduce_against_ps_comparison_reads_side_by_side(runs, tmp_path):
    md_path, json_path, html_path = write_reports([runs["allreduce"], runs["ps"]],
                                                  ["md", "json", "html"], tmp_path)
    md = md_path.read_text()
    table = md[:md.index("## Run")]
    assert "| workers | 2 | 2 |" in table
    assert "| sync | allreduce | ps |" in table
    # busiest link: ring 2(N-1)/N * M = 2792 bytes; parameter server 2(N-1) * M = 5584
    assert (f"| busiest link bytes/step | {nbytes(M)} (ring 2(N-1)/N·M) | "
            f"{nbytes(2 * M)} (parameter server 2(N-1)·M through rank 0) |") in table
    for label in ("comm share", "wait share", "bus bandwidth"):
        row = next(line for line in table.splitlines() if line.startswith(f"| {label} |"))
        assert "N/A" not in row, row
    allreduce, ps = (r["distributed"] for r in json.loads(json_path.read_text())["runs"])
    assert ps["busiest_link_bytes"] == 2 * allreduce["busiest_link_bytes"] == 2 * M
    chart = Figures(html_path.read_text()).figures["Time per rank"]
    ids = [runs["allreduce"].rsplit("/", 1)[-1], runs["ps"].rsplit("/", 1)[-1]]
    assert f"{ids[0]} (allreduce), rank 0" in chart and f"{ids[1]} (ps), rank 1" in chart


def test_a_single_process_run_has_no_data_parallel_parts(runs, tmp_path):
    r = report(runs["single"], tmp_path)
    assert "distributed" in r and r["distributed"] is None
    paths = write_reports([runs["single"]], ["md", "html", "csv"], tmp_path / "one")
    assert [p.name for p in paths] == ["report.md", "report.html", "report.csv"]  # no ranks CSV
    assert "Data parallel" not in paths[0].read_text()
    page = Figures(paths[1].read_text())
    assert "Data parallel" not in page.h2 and "Time per rank" not in page.figures
    md, = write_reports([runs["single"], runs["allreduce"]], ["md"], tmp_path / "both")
    table = md.read_text()
    assert "| workers | 1 | 2 |" in table and "| sync | N/A | allreduce |" in table
    assert "| comm share | N/A | " in table
