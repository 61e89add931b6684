"""The rows of the report's tables, formatted once for both HTML and Markdown."""

from __future__ import annotations

from ..format import missing, nbytes, si


def _num(value, spec: str = ".4g") -> str:
    return "N/A" if missing(value) else format(value, spec)


def summary_rows(r: dict) -> list[list[str]]:
    s = r["summary"]
    rows = [["status", r["status"] + (" (partial)" if r["partial"] else "")],
            ["steps recorded", f"{s['steps']:,}"],
            ["parameters", "N/A" if r["params"] is None else f"{r['params']:,}"],
            ["train loss: first / final (mean of last 10) / min",
             f"{_num(s['initial_train_loss'])} / {_num(s['final_train_loss'])} / "
             f"{_num(s['min_train_loss'])}"],
            ["validation loss: final / min", f"{_num(s['final_val_loss'])} / {_num(s['min_val_loss'])}"],
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
    return [
        row("model", lambda r: r["model"]),
        row("optimizer", lambda r: r["optimizer"]),
        row("norm", lambda r: r["norm"]),
        row("lr", lambda r: _num(r["config"].get("lr"), "g")),
        row("status", lambda r: r["status"] + (" (partial)" if r["partial"] else "")),
        row("steps", lambda r: f"{s(r)['steps']:,}"),
        row("final train loss", lambda r: _num(s(r)["final_train_loss"])),
        row("final val loss", lambda r: _num(s(r)["final_val_loss"])),
        row("clip events", lambda r: f"{s(r)['clip_events']:,}"),
        row("steps/s", lambda r: _num(s(r)["steps_per_second"], ".1f")),
        row("FLOPs fwd / bwd per step", lambda r: f"{si(r['flops']['forward_per_step'])} / "
                                                  f"{si(r['flops']['backward_per_step'])}"),
        row("achieved FLOP/s", lambda r: si(r["flops"]["achieved_flops_per_second"], "FLOP/s")),
        row("parameters", lambda r: nbytes(r["memory"]["param_bytes"])),
        row("optimizer state", lambda r: nbytes(r["memory"]["optimizer_state_bytes"])),
        row("peak saved activations", lambda r: nbytes(r["memory"]["peak_saved_activation_bytes"])),
    ]
