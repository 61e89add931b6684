"""The rows of the report's tables, formatted once for both HTML and Markdown."""

from __future__ import annotations

from lsml_tui.tui.format import milliseconds, missing, nbytes, si
from lsml_tui.tui.report.theory import rate

# sync -> (bytes each rank sends, bytes through the busiest link): the formulas
# profilers/comm.py's wire_bytes computes, for a gradient payload of M bytes on N ranks
FORMULAS = {
    "allreduce": ("ring 2(N-1)/N·M", "ring 2(N-1)/N·M"),
    "bf16": ("ring 2(N-1)/N·M/2, bf16", "ring 2(N-1)/N·M/2, bf16"),
    "ps": ("parameter server 2·M: M to rank 0, M back",
           "parameter server 2(N-1)·M through rank 0"),
    "powersgd": ("PowerSGD's low-rank factors: no fixed size",) * 2,
}
RANK_HEADER = ["rank", "compute", "comm", "wait", "step", "comm share", "wait share", ""]


def _num(value, spec: str = ".4g") -> str:
    return "N/A" if missing(value) else format(value, spec)


def mode(r: dict) -> str:
    """', bf16, compiled (reduce-overhead)': the math mode and torch.compile, when known."""
    compiled = r["config"].get("compile", "off")
    return ((f", {r['precision']}" if r.get("precision") else "")
            + (f", compiled ({compiled})" if compiled != "off" else ""))


def summary_rows(r: dict) -> list[list[str]]:
    s = r["summary"]
    rows = [["status", r["status"] + (" (partial)" if r["partial"] else "")],
            ["steps recorded", f"{s['steps']:,}"],
            ["parameters", "N/A" if r["params"] is None else f"{r['params']:,}"],
            ["train loss: first / final (mean of last 10) / min",
             f"{_num(s['initial_train_loss'])} / {_num(s['final_train_loss'])} / "
             f"{_num(s['min_train_loss'])}"],
            ["validation loss: final / min", f"{_num(s['final_val_loss'])} / {_num(s['min_val_loss'])}"],
            ["best validation step / generalization gap (final val - final train)",
             f"{'N/A' if s.get('best_val_step') is None else s['best_val_step']} / "
             f"{_num(s.get('generalization_gap'))}"
             + ("; stopped early" if s.get("stopped_early") else "")
             + (f"; ended with the best weights (val {_num(s['final_val_loss_restored'])})"
                if s.get("restored_best") else "")],
            ["overfitting (validation up, training down)",
             "not seen" if s.get("overfitting_step") is None else
             f"from step {s['overfitting_step']} (validation turned at step {s['best_val_step']})"],
            *averaged_rows(r),
            ["gradient norm: last / max", f"{_num(s['last_grad_norm'])} / {_num(s['max_grad_norm'])}"],
            ["clip events", f"{s['clip_events']:,}"],
            ["skipped steps (non-finite gradients)", f"{s['skipped_steps']:,}"],
            ["live switches", f"{s['switches']:,}"],
            ["throughput", f"{_num(s['steps_per_second'], '.1f')} steps/s"]]
    if r["flops"]:
        f = r["flops"]
        rows += [["FLOPs per step: forward / backward",
                  f"{si(f['forward_per_step'])} / {si(f['backward_per_step'])} "
                  f"(bwd/fwd {_num(f['backward_over_forward'], '.2f')})"],
                 ["achieved FLOP/s, MFU", f"{si(f['achieved_flops_per_second'], 'FLOP/s')}, "
                  f"{'N/A' if missing(f['mfu']) else format(f['mfu'], '.2%')}"]]
    if r["memory"]:
        rows.append(["peak saved activations", nbytes(r["memory"]["peak_saved_activation_bytes"])])
    return rows


def averaged_rows(r: dict) -> list[list[str]]:
    """--average: the averaged weights' validation loss, final / min; none without it."""
    s, spec = r["summary"], r["config"].get("average")
    final, low = s.get("final_val_loss_averaged"), s.get("min_val_loss_averaged")
    if not spec and final is None:
        return []
    return [[f"validation loss, averaged weights ({spec or 'N/A'}): final / min",
             f"{_num(final)} / {_num(low)}"]]


def _share(value) -> str:
    return "N/A" if missing(value) else f"{value:.1%}"


def distributed_rows(r: dict) -> list[list[str]]:
    """One row per rank: mean seconds per sampled step (as ms) and the shares of its step."""
    d = r["distributed"]
    return [[str(k["rank"]), milliseconds(k["compute_s"]), milliseconds(k["comm_s"]),
             milliseconds(k["wait_s"]), milliseconds(k["step_s"]), _share(k["comm_share"]),
             _share(k["wait_share"]), "slowest" if k["rank"] == d["slowest_rank"] else ""]
            for k in d["ranks"]]


def distributed_summary_rows(r: dict) -> list[list[str]]:
    """World size, sync, bytes by formula, bandwidth, measured against predicted step."""
    d = r["distributed"]
    per_rank, busiest = FORMULAS.get(d["sync"], (None, None))
    noise = "N/A" if missing(d["noise_scale"]) else format(d["noise_scale"], ".3g")
    agree = {True: "yes", False: "NO: the replicas' weights differ", None: "N/A"}
    predicted = ("N/A (no --straggle)" if d["step_s_predicted"] is None else
                 f"{milliseconds(d['step_s_predicted'])} (mean compute + E[max injected delay])")
    return [
        ["world size", f"{d['world_size']} ranks, global batch {d['global_batch'] or 'N/A'}"],
        ["sync", d["sync"] or "N/A"],
        ["straggler model (--straggle)", d["straggle"] or "none"],
        ["sampled steps", f"{d['samples']:,}"],
        ["gradient payload M per rank per step", nbytes(d["payload_bytes"])],
        ["bytes sent per rank per step", _bytes_by(d["wire_bytes_per_rank"], per_rank)],
        ["bytes through the busiest link per step", _bytes_by(d["busiest_link_bytes"], busiest)],
        ["algbw / busbw", f"{si(d['algbw'], 'B/s')} / {si(d['busbw'], 'B/s')}"],
        ["synchronous step: measured / predicted",
         f"{milliseconds(d['step_s_measured'])} / {predicted}"],
        ["slowest rank (longest compute, most often)",
         "N/A" if d["slowest_rank"] is None else f"rank {d['slowest_rank']}"],
        ["noise scale vs global batch", f"{noise} vs {d['global_batch'] or 'N/A'}"],
        ["replicas agree", agree[d["replicas_agree"]]],
        ["optimizer state per rank (--parallel)", _held(d)],
    ]


def _held(d: dict) -> str:
    """Each rank's optimizer state bytes against the formula: a whole replica under ddp,
    total / N under zero1."""
    held = d.get("optimizer_state_per_rank") or []
    if not held or any(v is None for v in held):
        return "N/A"
    formula = ("a whole copy each" if d.get("parallel", "ddp") == "ddp" else
               f"formula {nbytes(d.get('optimizer_state_predicted'))}")
    return (", ".join(f"rank {i} {nbytes(v)}" for i, v in enumerate(held))
            + f" ({d.get('parallel', 'ddp')}: {formula})")


def _bytes_by(value, formula: str | None) -> str:
    return nbytes(value) + (f" ({formula})" if formula else "")


def _rank_share(d: dict, key: str) -> str:
    """The share of all ranks' step time spent in `key` (comm_s or wait_s)."""
    step = sum(k["step_s"] for k in d["ranks"])
    return _share(sum(k[key] for k in d["ranks"]) / step if step else None)


def flops_rows(r: dict) -> list[list[str]]:
    f = r["flops"]
    total = f["forward_per_step"] + f["backward_per_step"]
    rows = sorted(f["per_module"].items(), key=lambda kv: -(kv[1]["forward"] + kv[1]["backward"]))
    return [[name, si(v["forward"]), si(v["backward"]),
             f"{v['backward'] / v['forward']:.2f}" if v["forward"] else "-",
             f"{(v['forward'] + v['backward']) / total:.1%}" if total else "-"]
            for name, v in rows]


def config_rows(r: dict) -> list[list[str]]:
    return [[k, "-" if v is None else str(v)] for k, v in r["config"].items()]


def comparison_rows(reports: list[dict]) -> list[list[str]]:
    """One row per figure, one column per run: how the runs differ."""
    def row(label, get):
        out = [label]
        for r in reports:
            try:
                out.append(get(r))
            except (TypeError, KeyError):     # a figure this run did not record
                out.append("N/A")
        return out
    s = lambda r: r["summary"]  # noqa: E731
    d = lambda r: r["distributed"]  # noqa: E731
    return [
        row("model", lambda r: r["model"]),
        row("optimizer", lambda r: r["optimizer"]),
        row("norm", lambda r: r["norm"]),
        row("lr", lambda r: _num(r["config"].get("lr"), "g")),
        row("math mode", lambda r: r.get("precision") or "N/A"),
        row("workers", lambda r: str(d(r)["world_size"] if d(r) else 1)),
        row("sync", lambda r: d(r)["sync"]),
        row("parallel", lambda r: d(r)["parallel"]),
        row("held per rank, largest", lambda r: nbytes(max(
            sum(k[f"{x}_bytes"] for x in ("param", "grad", "optimizer_state"))
            for k in d(r)["held"]["ranks"]))),
        row("sent per rank per step, largest", lambda r: nbytes(max(
            k["comm_bytes"] for k in d(r)["held"]["ranks"]))),
        row("status", lambda r: r["status"] + (" (partial)" if r["partial"] else "")),
        row("steps", lambda r: f"{s(r)['steps']:,}"),
        row("final train loss", lambda r: _num(s(r)["final_train_loss"])),
        row("final val loss", lambda r: _num(s(r)["final_val_loss"])),
        row("best val loss (step)", lambda r: f"{_num(s(r)['min_val_loss'])} "
                                              f"({s(r)['best_val_step']})"),
        row("overfitting from step", lambda r: "not seen" if s(r)["overfitting_step"] is None
            else str(s(r)["overfitting_step"])),
        row("final val loss, averaged", lambda r: _num(s(r)["final_val_loss_averaged"])
            + (f" ({r['config']['average']})" if r["config"].get("average") else "")),
        row("clip events", lambda r: f"{s(r)['clip_events']:,}"),
        row("steps/s", lambda r: _num(s(r)["steps_per_second"], ".1f")),
        row("comm share", lambda r: _rank_share(d(r), "comm_s")),
        row("wait share", lambda r: _rank_share(d(r), "wait_s")),
        row("busiest link bytes/step", lambda r: _bytes_by(
            d(r)["busiest_link_bytes"], FORMULAS.get(d(r)["sync"], (None, None))[1])),
        row("bus bandwidth", lambda r: si(d(r)["busbw"], "B/s")),
        row("rate per step: theory / measured", lambda r: f"{rate(r['theory']['rate_theory'])} / "
                                                          f"{rate(r['theory']['rate_measured'])}"),
        row("sharpness / limit", lambda r: f"{_num(r['sharpness']['last'])} / "
                                           f"{_num(r['sharpness']['threshold'])}"),
        row("noise scale vs batch", lambda r: f"{_num(r['noise_scale']['last'], '.3g')} vs "
                                              f"{r['noise_scale']['batch']}"),
        row("FLOPs fwd / bwd per step", lambda r: f"{si(r['flops']['forward_per_step'])} / "
                                                  f"{si(r['flops']['backward_per_step'])}"),
        row("achieved FLOP/s", lambda r: si(r["flops"]["achieved_flops_per_second"], "FLOP/s")),
        row("parameters", lambda r: nbytes(r["memory"]["param_bytes"])),
        row("gradients", lambda r: nbytes(r["memory"]["grad_bytes"])),
        row("optimizer state", lambda r: nbytes(r["memory"]["optimizer_state_bytes"])),
        row("peak saved activations", lambda r: nbytes(r["memory"]["peak_saved_activation_bytes"])),
    ]
