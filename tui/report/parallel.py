"""What each rank held, sent and idled in a --workers N run, beside each formula: the
per-rank table and the memory-per-rank chart of the reports (the data-parallel block's
``held``, read by data.py from the last DistSample)."""

from __future__ import annotations

from lsml_tui.tui.format import nbytes

KINDS = ("param", "grad", "optimizer_state", "activation")
LABELS = {"param": "params", "grad": "grads", "optimizer_state": "optimizer state",
          "activation": "activations"}
HEADER = ["rank", "params", "grads", "optimizer state", "activations", "sent / step",
          "by collective", "bubble"]


def held(samples: list[dict]) -> dict | None:
    """Per rank at the last sample: bytes held by kind and sent by collective, with the
    mode's formulas; the bubble as the mean over the samples. None without samples."""
    if not samples or all(r.get("param_bytes") is None for r in samples[-1]["ranks"]):
        return None                                 # (a watched script's ranks: timings only)
    last = samples[-1]
    sent = last.get("comm_predicted") or []
    ranks = []
    for r in last["ranks"]:
        bubbles = [x["bubble_fraction"] for s in samples for x in s["ranks"]
                   if x["rank"] == r["rank"] and x.get("bubble_fraction") is not None]
        ranks.append({"rank": r["rank"], **{f"{k}_bytes": r.get(f"{k}_bytes") for k in KINDS},
                      "comm_bytes": r.get("comm_bytes"), "collectives": r.get("collectives"),
                      "comm_predicted": sent[r["rank"]] if r["rank"] < len(sent) else None,
                      "bubble_fraction": sum(bubbles) / len(bubbles) if bubbles else None})
    return {"ranks": ranks, "bubble_predicted": last.get("bubble_predicted"),
            **{f"{k}_predicted": last.get(f"{k}_predicted") for k in KINDS[:3]}}


def _collectives(kinds: dict | None) -> str:
    if not kinds:
        return "N/A"
    return ", ".join(f"{k.replace('_', '-')} {nbytes(v['bytes'])} in {v['s'] * 1e3:.2f} ms"
                     for k, v in kinds.items())


def _share(value) -> str:
    return "N/A" if value is None else f"{100 * value:.1f}%"


def held_rows(r: dict) -> list[list[str]]:
    """One row per rank, then the formulas' row."""
    h = (r.get("distributed") or {}).get("held")
    if not h:
        return []
    rows = [[str(k["rank"]), *(nbytes(k[f"{kind}_bytes"]) for kind in KINDS),
             nbytes(k["comm_bytes"]) + ("" if k["comm_predicted"] is None
                                        else f" (formula {nbytes(k['comm_predicted'])})"),
             _collectives(k["collectives"]), _share(k["bubble_fraction"])]
            for k in h["ranks"]]
    rows.append(["formula", *(nbytes(h.get(f"{kind}_predicted")) for kind in KINDS[:3]), "",
                 "", "", "N/A" if h["bubble_predicted"] is None
                 else f"(p-1)/(m+p-1) = {_share(h['bubble_predicted'])}"])
    return rows


def memory_per_rank_chart(runs, figure, svg_of) -> str:
    """Per rank, the bytes it held by kind, stacked, with the formula's total marked."""
    bars = []                                           # (label, rank row, formula)
    for run in runs:
        h = held(run.samples["DistSample"])
        for k in (h or {}).get("ranks", []):
            label = f"rank {k['rank']}" if len(runs) == 1 else f"{run.info.id}, rank {k['rank']}"
            formula = sum(h.get(f"{kind}_predicted") or 0 for kind in KINDS[:3])
            bars.append((label, k, formula))
    fig, ax = figure(max(2.0, 0.35 * len(bars) + 1.2))
    ys = list(range(len(bars)))
    left = [0.0] * len(bars)
    for kind in KINDS:
        kib = [(k.get(f"{kind}_bytes") or 0) / 1024 for _, k, _ in bars]
        ax.barh(ys, kib, left=left, label=LABELS[kind])
        left = [a + b for a, b in zip(left, kib)]
    ax.scatter([f / 1024 for _, _, f in bars], ys, marker="|", s=200, color="black",
               label="formula (params + grads + optimizer)", zorder=3)
    ax.set_yticks(ys, [label for label, _, _ in bars], fontsize=7)
    ax.invert_yaxis()
    ax.set(xlabel="KiB held by the rank (last sample)", title="Memory per rank")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
    return svg_of(fig)
