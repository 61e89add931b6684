"""Data parallel: where each rank's step goes (compute, communication, waiting for the
slowest), the straggler, bytes and bandwidth, the H_N prediction and the noise scale.
Shown when the run has more than one rank."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from lsml_tui.trainer.events import DistSample
from lsml_tui.tui.format import milliseconds, nbytes, si

BAR = 24                                    # characters of the longest rank's step
PARTS = (("compute_s", "█", "green"), ("comm_s", "▓", "blue"), ("wait_s", "░", "yellow"))
FORMULA = {"ps": "parameter server 2(N-1)·M through rank 0"}


class DistributedPanel(Static):
    DEFAULT_CLASSES = "panel"   # the app hands every panel each event

    def __init__(self, cfg, **kw):
        super().__init__("waiting for the first sampled step …", **kw)
        mode = getattr(cfg, "parallel", "ddp")
        split = mode not in ("ddp", "zero1")            # the model itself is split
        self.border_title = (f"Parallel: {cfg.workers} ranks, {mode}" if split else
                             f"Data parallel: {cfg.workers} ranks, "
                             + ("your DDP" if cfg.sync == "watch" else cfg.sync)
                             + (f", {mode}" if mode != "ddp" else ""))
        self.latest: DistSample | None = None
        self.dirty = False

    def add(self, e) -> None:
        if isinstance(e, DistSample):
            self.latest, self.dirty = e, True

    def redraw(self) -> None:
        if self.latest is not None:
            self.update(render(self.latest))
        self.dirty = False


def memory(s: DistSample) -> Text:
    """Per rank: the bytes it holds by kind, the formula of the mode beside them (ZeRO: a
    whole replica of what is not sharded, total / N of what is), what it sent in a step by
    collective beside that formula, and under pp its bubble beside (p-1)/(m+p-1)."""
    if any(r.get("optimizer_state_bytes") is None for r in s.ranks):
        return Text()
    out = Text("\n")
    for r in s.ranks:
        out.append(f"r{r['rank']} params {nbytes(r['param_bytes'])} grads "
                   f"{nbytes(r['grad_bytes'])} opt {nbytes(r['optimizer_state_bytes'])}"
                   + (f" act {nbytes(r['activation_bytes'])}" if r.get("activation_bytes")
                      else "") + "\n")
    predicted = [getattr(s, f"{k}_predicted", None) for k in ("param", "grad",
                                                               "optimizer_state")]
    if any(p is not None for p in predicted):
        out.append(f"formula {s.parallel}: params {nbytes(predicted[0])} grads "
                   f"{nbytes(predicted[1])} opt {nbytes(predicted[2])}\n", style="dim")
    sent = s.comm_predicted or []
    for r in s.ranks:
        if r.get("comm_bytes") is None:
            continue
        kinds = ", ".join(f"{k.replace('_', '-')} {nbytes(v['bytes'])} {milliseconds(v['s'])}"
                          for k, v in (r.get("collectives") or {}).items())
        formula = f" (formula {nbytes(sent[r['rank']])})" if r["rank"] < len(sent) else ""
        out.append(f"r{r['rank']} sent {nbytes(r['comm_bytes'])}{formula}: {kinds}\n")
    if s.bubble_predicted is not None:
        bubbles = "  ".join(f"r{r['rank']} {100 * r['bubble_fraction']:.0f}%" for r in s.ranks
                            if r.get("bubble_fraction") is not None)
        out.append(f"bubble {bubbles} vs (p-1)/(m+p-1) = {100 * s.bubble_predicted:.0f}%\n")
    out.rstrip()
    return out


def render(s: DistSample) -> Text:
    """Per-rank stacked bars (compute, comm, wait) and the figures beside them."""
    longest = max(sum(r[k] for k, _, _ in PARTS) for r in s.ranks) or 1.0
    out = Text()
    for r in s.ranks:
        out.append(f"{r['rank']:>2} ")
        used = 0
        for key, mark, style in PARTS:
            n = round(BAR * r[key] / longest)
            out.append(mark * n, style=style)
            used += n
        out.append(" " * max(0, BAR - used))
        out.append(f" {milliseconds(r['step_s'])}")
        if r["rank"] == s.slowest:
            out.append("  slowest", style="bold yellow")
        out.append("\n")
    if s.sync == "watch":           # a user's DDP script: no bytes of ours to show
        out.append("█ data+forward ", style="green") \
            .append("▓ backward, all-reduce, update ", style="blue") \
            .append("░ wait\n", style="yellow")
        out.append(f"step {milliseconds(max(r['step_s'] for r in s.ranks))}, "
                   f"global batch {s.global_batch}")
        if not s.replicas_agree:
            out.append("\nreplicas differ!", style="bold red")
        return out
    out.append("█ compute ", style="green").append("▓ comm ", style="blue") \
        .append("░ wait\n", style="yellow")
    step = max(r["step_s"] for r in s.ranks)
    line = f"sync step {milliseconds(step)}, spread {milliseconds(s.spread_s)}"
    if s.predicted_step_s is not None:
        line += f"; predicted {milliseconds(s.predicted_step_s)}"
    out.append(line + "\n")
    if s.parallel in ("ddp", "zero1"):             # DDP's gradient all-reduce and its noise
        formula = FORMULA.get(s.sync, "ring 2(N-1)/N·M per rank")
        out.append(f"M {nbytes(s.payload_bytes)}; {formula}: {nbytes(s.busiest_link_bytes)}\n")
        out.append(f"algbw {si(s.algbw, 'B/s')}  busbw {si(s.busbw, 'B/s')}\n")
        noise = "N/A" if s.noise_scale is None else f"{s.noise_scale:.3g}"
        out.append(f"noise scale {noise} vs global batch {s.global_batch}")
    else:
        out.append(f"global batch {s.global_batch}")
    out.append_text(memory(s))
    if s.replicas_agree is False:                   # None: no replicas (fsdp, pp)
        out.append("\nreplicas differ!", style="bold red")
    return out
