"""Report writers: HTML, Markdown, JSON and CSV from the run store (and only from it).

``write_reports([run_dir, ...], formats, out_dir)`` reads each run once and writes
one file per format, each to a temporary name renamed into place. One run's
reports go to ``<run_dir>/report.<ext>``; several runs make one comparison,
``<runs dir>/compare-<time>.<ext>``. A data-parallel run's CSV comes with a second one
beside it, ``<stem>-ranks.csv``: one row per sampled step and rank. ``tensorboard`` (the
optional extra, never a default) writes one event file per run instead, never a comparison:
into each run's own directory, or ``<out_dir>/<run id>/`` (tensorboard.py).

May import the run store's reader, ``lsml_tui.trainer``'s torch-free modules,
``lsml_tui.tui.series`` and ``format``, matplotlib (charts) and tensorboard (its extra);
never the app or textual.
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

from lsml_tui.trainer.store.schema import json_safe, write_atomic
from lsml_tui.tui.report.data import SCHEMA_VERSION, RunData, load_run, summarize

FORMATS = ("html", "md", "json", "csv", "tensorboard")
DEFAULT_FORMATS = ("html", "md", "json", "csv")    # tensorboard needs lsml-tui[tensorboard]
STEP_COLUMNS = ("step", "time", "loss", "lr", "grad_norm", "grad_norm_clipped", "clipped",
                "examples_per_second")
RANK_COLUMNS = ("step", "rank", "compute_s", "comm_s", "wait_s", "step_s", "payload_bytes")


def to_json(reports: list[dict]) -> str:
    return json.dumps({"schema_version": SCHEMA_VERSION, "generated_by": "lsml-tui",
                       "runs": reports}, indent=2, allow_nan=False) + "\n"


def to_csv(runs: list[RunData]) -> str:
    """One row per recorded step (per run), with the validation loss where one was taken."""
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(["run_id", *STEP_COLUMNS, "val_loss"])
    for run in runs:
        val = dict(zip(run.val["step"], run.val["loss"]))
        cols = [run.steps[c] for c in STEP_COLUMNS]
        for row in zip(*cols):
            out.writerow([run.info.id, *("" if v is None else v for v in row), val.get(row[0], "")])
    return buf.getvalue()


def to_ranks_csv(runs: list[RunData]) -> str | None:
    """One row per DistSample and rank (per run); None when no run is data parallel."""
    if not any(run.samples["DistSample"] for run in runs):
        return None
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(["run_id", *RANK_COLUMNS])
    for run in runs:
        for sample in run.samples["DistSample"]:
            for rank in sample["ranks"]:
                out.writerow([run.info.id, sample["step"], *(rank[c] for c in RANK_COLUMNS[1:])])
    return buf.getvalue()


def default_out(run_dirs: list[Path]) -> Path:
    return run_dirs[0] if len(run_dirs) == 1 else run_dirs[0].parent


def write_reports(run_dirs, formats=DEFAULT_FORMATS, out_dir=None) -> list[Path]:
    """Write each format for these runs; return the paths written."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:                         # refused before anything is written
        raise ValueError(f"unknown report format {unknown[0]!r}; allowed: {', '.join(FORMATS)}")
    dirs = [Path(d) for d in run_dirs]
    written = []
    if "tensorboard" in formats:        # streams each store itself: no run loaded for it
        from lsml_tui.tui.report.tensorboard import write_tensorboard
        written += [write_tensorboard(d, out_dir) for d in dirs]
    formats = [f for f in formats if f != "tensorboard"]
    if not formats:
        return written
    runs = [load_run(d) for d in dirs]
    reports = [json_safe(summarize(r)) for r in runs]
    out = Path(out_dir) if out_dir is not None else default_out(dirs)
    out.mkdir(parents=True, exist_ok=True)
    stem = "report" if len(runs) == 1 else f"compare-{time.strftime('%Y%m%d-%H%M%S')}"
    for fmt in formats:
        if fmt == "html":
            from lsml_tui.tui.report.html import render  # matplotlib: imported only when drawing
            text = render(runs, reports)
        elif fmt == "md":
            from lsml_tui.tui.report.markdown import render as render_md
            text = render_md(reports)
        elif fmt == "json":
            text = to_json(reports)
        else:
            text = to_csv(runs)
        path = out / f"{stem}.{fmt}"
        write_atomic(path, text)
        written.append(path)
        ranks = to_ranks_csv(runs) if fmt == "csv" else None
        if ranks is not None:
            write_atomic(out / f"{stem}-ranks.csv", ranks)
            written.append(out / f"{stem}-ranks.csv")
    return written
