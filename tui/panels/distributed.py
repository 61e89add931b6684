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
        self.border_title = (f"Data parallel: {cfg.workers} ranks, "
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
    """What each rank holds: parameters and gradients (whole on every rank), the optimizer
    state per rank against ZeRO's formula (total / N when sharded)."""
    if any(r.get("optimizer_state_bytes") is None for r in s.ranks):
        return Text()
    first = s.ranks[0]
    out = Text(f"\nparams {nbytes(first['param_bytes'])}, grads {nbytes(first['grad_bytes'])} "
               f"on every rank\n")
    held = "  ".join(f"r{r['rank']} {nbytes(r['optimizer_state_bytes'])}" for r in s.ranks)
    formula = (f"{s.parallel}: total/N = {nbytes(s.optimizer_state_predicted)}"
               if s.parallel != "ddp" else "ddp: a whole copy each")
    out.append(f"optimizer state {held} ({formula})")
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
    formula = FORMULA.get(s.sync, "ring 2(N-1)/N·M per rank")
    out.append(f"M {nbytes(s.payload_bytes)}; {formula}: {nbytes(s.busiest_link_bytes)}\n")
    out.append(f"algbw {si(s.algbw, 'B/s')}  busbw {si(s.busbw, 'B/s')}\n")
    noise = "N/A" if s.noise_scale is None else f"{s.noise_scale:.3g}"
    out.append(f"noise scale {noise} vs global batch {s.global_batch}")
    out.append_text(memory(s))
    if s.replicas_agree is False:                   # None: no replicas (fsdp, pp)
        out.append("\nreplicas differ!", style="bold red")
    return out
