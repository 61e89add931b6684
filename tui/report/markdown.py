"""The Markdown report: the summary and tables, readable in a terminal or a pull request."""

from __future__ import annotations

from lsml_tui.tui.format import milliseconds, nbytes
from lsml_tui.tui.report.parallel import HEADER as HELD_HEADER, held_rows
from lsml_tui.tui.report.measures import sections
from lsml_tui.tui.report.tables import (RANK_HEADER, comparison_rows, config_rows,
                                        distributed_rows, distributed_summary_rows, flops_rows,
                                        mode, summary_rows)
from lsml_tui.tui.report.theory import theory_notes, theory_rows


def _cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(map(_cell, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(_cell, row)) + " |" for row in rows]
    return "\n".join(lines)


def render(reports: list[dict]) -> str:
    """One run: summary, FLOPs, memory, config, timeline. Several: a comparison first."""
    out = []
    if len(reports) > 1:
        out += [f"# lsml-tui: {len(reports)} runs compared", "",
                table(["", *[r["id"] for r in reports]], comparison_rows(reports)), ""]
    for r in reports:
        out += _run(r, level="##" if len(reports) > 1 else "#")
    return "\n".join(out).rstrip() + "\n"


def _run(r: dict, level: str) -> list[str]:
    partial = " (partial: the run was still going)" if r["partial"] else ""
    out = [f"{level} Run {r['id']}{partial}", "",
           f"{r['model']}, {r['optimizer']}, norm {r['norm']} on {r['device'] or 'N/A'}{mode(r)}; "
           f"status **{r['status']}**; started {r['created']}", "",
           f"{level}# Summary", "", table(["metric", "value"], summary_rows(r)), ""]
    if r["flops"]:
        out += [f"{level}# FLOPs per step", "",
                table(["module", "forward", "backward", "bwd/fwd", "share"], flops_rows(r)), ""]
    if r["memory"]:
        m = r["memory"]
        out += [f"{level}# Memory", "",
                table(["part", "bytes"],
                      [["parameters", nbytes(m["param_bytes"])],
                       ["gradients", nbytes(m["grad_bytes"])],
                       ["optimizer state", nbytes(m["optimizer_state_bytes"])],
                       ["saved activations (latest / peak)",
                        f"{nbytes(m['saved_activation_bytes'])} / "
                        f"{nbytes(m['peak_saved_activation_bytes'])}"]]
                      + [[f"saved by {k}", nbytes(v)] for k, v in m["saved_bytes_per_module"].items()]),
                ""]
    if r["timing"]:
        phases = r["timing"]["phase_seconds"]
        out += [f"{level}# Step time by phase (latest sample)", "",
                table(["phase", "time"], [[k, milliseconds(v)] for k, v in phases.items()]), ""]
    if r["distributed"]:
        out += [f"{level}# Data parallel", "",
                table(["figure", "value"], distributed_summary_rows(r)), "",
                "Mean time per sampled step on each rank; wait is time spent for the slowest "
                "rank's compute, comm the rest of what the gradient sync exposed.", "",
                table(RANK_HEADER, distributed_rows(r)), ""]
        if held_rows(r):
            out += [f"{level}# Per rank: memory, communication, bubble", "",
                    "What each rank held and sent at the last sample, beside the formulas of "
                    "its --parallel mode; the bubble is the mean over the samples.", "",
                    table(HELD_HEADER, held_rows(r)), ""]
    if r["theory"]:
        out += [f"{level}# Theory (least squares)", "",
                table(["figure", "value"], theory_rows(r)), ""]
        out += [line for note in theory_notes(r) for line in (note, "")]
    for title, rows, note, _ in sections(r):
        out += [f"{level}# {title}", "", table(["figure", "value"], rows), "", note, ""]
    out += [f"{level}# Config", "", table(["key", "value"], config_rows(r)), "",
            f"{level}# Timeline", ""]
    out += [f"- {e['text']}" for e in r["timeline"]] or ["- (no events recorded)"]
    return out + [""]
