"""The HTML report: one self-contained file, charts as inline SVG, no network needed."""

from __future__ import annotations

from html import escape

from lsml_tui.tui.report.parallel import HEADER as HELD_HEADER, held_rows
from lsml_tui.tui.report.charts import charts
from lsml_tui.tui.report.data import RunData
from lsml_tui.tui.report.measures import sections
from lsml_tui.tui.report.tables import (RANK_HEADER, comparison_rows, config_rows,
                                        distributed_rows, distributed_summary_rows, flops_rows,
                                        summary_rows)
from lsml_tui.tui.report.tables import mode as _mode
from lsml_tui.tui.report.theory import theory_notes, theory_rows
from lsml_tui.tui.report.theory_charts import distance_chart, noise_chart, sharpness_chart

MEASURE_CHARTS = {"SharpnessSample": sharpness_chart, "NoiseSample": noise_chart}

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem;
       color: #1d1d1f; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-variant-numeric: tabular-nums; }
td, th { border: 1px solid #ddd; padding: 0.2rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f4f4f6; }
figure { margin: 1rem 0; } figure svg { max-width: 100%; height: auto; }
.partial { background: #fff4d6; border: 1px solid #e8c35a; padding: 0.5rem 1rem; }
.timeline { font-family: ui-monospace, monospace; font-size: 12px; white-space: pre-wrap; }
"""


def _table(header: list[str] | None, rows: list[list]) -> str:
    head = "<tr>" + "".join(f"<th>{escape(str(h))}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table>{head}{body}</table>"


def render(runs: list[RunData], reports: list[dict]) -> str:
    several = len(runs) > 1
    title = (f"lsml-tui: {len(runs)} runs compared" if several
             else f"lsml-tui run {reports[0]['id']}")
    parts = [f"<h1>{escape(title)}</h1>"]
    for r in reports:
        if r["partial"]:
            parts.append(f'<p class="partial">Partial report: run {escape(r["id"])} was still '
                         f'going when this was written ({r["summary"]["steps"]:,} steps so far).</p>')
    if several:
        parts += ["<h2>Comparison</h2>",
                  _table(["", *[r["id"] for r in reports]], comparison_rows(reports))]
    else:
        r = reports[0]
        parts += [f"<p>{escape(r['model'])}, {escape(r['optimizer'])}, norm {escape(r['norm'])} "
                  f"on {escape(r['device'] or 'N/A')}{escape(_mode(r))}; status <b>{escape(r['status'])}</b>; "
                  f"started {escape(r['created'] or 'N/A')}</p>",
                  "<h2>Summary</h2>", _table(["metric", "value"], summary_rows(r))]
    parts.append("<h2>Charts</h2>")
    for name, svg in charts(runs):
        parts.append(f'<figure aria-label="{escape(name)}">{svg}</figure>')
    for run, r in zip(runs, reports):
        level = f" {escape(r['id'])}" if several else ""
        if r["flops"]:
            parts += [f"<h2>FLOPs per step{level}</h2>",
                      _table(["module", "forward", "backward", "bwd/fwd", "share"], flops_rows(r))]
        if r["distributed"]:
            parts += [f"<h2>Data parallel{level}</h2>",
                      _table(["figure", "value"], distributed_summary_rows(r)),
                      _table(RANK_HEADER, distributed_rows(r))]
            if held_rows(r):
                parts += [f"<h2>Per rank: memory, communication, bubble{level}</h2>",
                          _table(HELD_HEADER, held_rows(r))]
        if r["theory"]:
            parts += [f"<h2>Theory (least squares){level}</h2>",
                      _table(["figure", "value"], theory_rows(r)),
                      *(f"<p>{escape(note)}</p>" for note in theory_notes(r))]
            if run.samples["TheorySample"]:
                label = "Distance to w*" + (f" {r['id']}" if several else "")
                parts.append(f'<figure aria-label="{escape(label)}">{distance_chart(run)}</figure>')
        for title, rows, note, kind in sections(r):
            parts += [f"<h2>{escape(title)}{level}</h2>", _table(["figure", "value"], rows),
                      f"<p>{escape(note)}</p>",
                      f'<figure aria-label="{escape(title)}">{MEASURE_CHARTS[kind](run)}</figure>']
        parts += [f"<h2>Config{level}</h2>", _table(["key", "value"], config_rows(r)),
                  f"<h2>Timeline{level}</h2>",
                  '<div class="timeline">' + "\n".join(escape(e["text"]) for e in r["timeline"])
                  + "</div>"]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(title)}</title><style>{STYLE}</style></head>\n<body>\n"
            + "\n".join(parts) + "\n</body></html>\n")
