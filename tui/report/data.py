"""What a report says about one run, read from its run store and nothing else.

``load_run`` reads the store once; ``summarize`` turns that into the plain,
JSON-ready dict that every format writes (documented in the README, versioned
by ``SCHEMA_VERSION``). A run that is still going reads the same way and is
marked ``partial``.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from datetime import datetime, timezone

from lsml_tui.trainer.commands import SWITCHES
from lsml_tui.trainer.events import event_from_payload
from lsml_tui.trainer.store.reader import RunInfo, open_run
from lsml_tui.trainer.store.schema import LIVE
from lsml_tui.tui.format import describe
from lsml_tui.tui.report.measures import noise_summary, sharpness_summary
from lsml_tui.tui.report.parallel import held
from lsml_tui.tui.report.theory import theory_summary

# Adding an optional key is backward compatible (a reader of version 1 ignores what it does
# not know), so "distributed" (null for a single-process run) and "theory" (null unless
# --model linear) did not bump the version, nor did the summary's final_val_loss_averaged and
# min_val_loss_averaged (null without --average) or the theory block's distance_averaged,
# nor "sharpness" and "noise_scale" (null unless measured).
SCHEMA_VERSION = 1
PROFILES = ("FlopTable", "LayerStats", "MemorySample", "TimingSample", "SystemSample",
            "DistSample", "TheoryInfo", "TheorySample", "AveragedVal", "SharpnessSample",
            "NoiseSample")
MEMORY_PARTS = ("param_bytes", "grad_bytes", "optimizer_state_bytes", "saved_activation_bytes")
FINAL_WINDOW = 10      # final_train_loss: mean of the last 10 finite losses, as the trainer's
RANK_PARTS = ("compute_s", "comm_s", "wait_s", "step_s")


@dataclass
class RunData:
    info: RunInfo
    steps: dict[str, list]          # the steps table, column by column
    val: dict[str, list]            # step, loss
    clips: dict[str, list]          # step, grad_norm, threshold, scale
    samples: dict[str, list[dict]]  # kind -> sampled profiles, oldest first
    events: list[dict]              # the events table, oldest first

    @property
    def partial(self) -> bool:
        return self.info.status in LIVE

    @property
    def switches(self) -> list[tuple[int, str]]:
        """(step, command) of every applied optimizer, norm, lr or clip change."""
        return [(e["step"], e["command"]) for e in self.events
                if e["kind"] == "CommandApplied" and e["command"].split()[0] in SWITCHES]

    def latest(self, kind: str) -> dict | None:
        return self.samples[kind][-1] if self.samples[kind] else None

    @property
    def averaged_val(self) -> dict[str, list]:
        """--average: step and loss of every validation of the averaged weights."""
        samples = self.samples["AveragedVal"]
        return {"step": [s["step"] for s in samples], "loss": [s["val_loss"] for s in samples]}


def load_run(run_dir) -> RunData:
    with open_run(run_dir) as r:
        return RunData(info=r.info(), steps=r.steps(), val=r.val(), clips=r.clips(),
                       samples={k: r.samples(k) for k in PROFILES}, events=r.events())


def _finite(values) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


def steps_per_second(run: RunData) -> float | None:
    """Steps over the seconds spent in them: each step took batch_size / examples_per_second.
    A watched run's batch is the user's (it may vary): its own summary says."""
    batch = run.info.config.get("batch_size")
    if not batch:
        return (run.info.summary or {}).get("steps_per_second")
    seconds = [batch / eps for eps in run.steps["examples_per_second"] if eps and eps > 0]
    return len(seconds) / sum(seconds) if seconds else None


def _best_val_step(val: dict) -> int | None:
    finite = [(loss, step) for step, loss in zip(val["step"], val["loss"])
              if loss is not None and math.isfinite(loss)]
    return min(finite)[1] if finite else None


def summarize(run: RunData) -> dict:
    """Everything a report states about one run, as plain JSON-ready data."""
    info, steps = run.info, run.steps
    losses, norms = _finite(steps["loss"]), _finite(steps["grad_norm"])
    started = next((e for e in run.events if e["kind"] == "RunStarted"), None)
    overfit = next((e for e in run.events if e["kind"] == "Overfitting"), None)
    flops, timing = run.latest("FlopTable"), run.latest("TimingSample")
    memory, layers = run.latest("MemorySample"), run.latest("LayerStats")
    averaged = run.averaged_val["loss"]                 # --average: the averaged weights' losses
    return {
        "id": info.id,
        "run_dir": info.run_dir,
        "status": info.status,
        "partial": run.partial,
        "model": info.model,
        "optimizer": info.optimizer,
        "norm": info.norm,
        "device": started["device"] if started else None,
        "precision": (started or {}).get("precision") or None,
        "params": started["params"] if started else None,
        "created": _iso(info.created),
        "ended": _iso(info.ended),
        "config": info.config,
        "summary": {
            "steps": len(steps["step"]),
            "last_step": steps["step"][-1] if steps["step"] else None,
            "initial_train_loss": losses[0] if losses else None,
            "final_train_loss": statistics.fmean(losses[-FINAL_WINDOW:]) if losses else None,
            "min_train_loss": min(losses) if losses else None,
            "final_val_loss": run.val["loss"][-1] if run.val["loss"] else None,
            "min_val_loss": min(_finite(run.val["loss"]), default=None),
            "best_val_step": _best_val_step(run.val),
            # the last validation loss minus the final training loss (the mean of the last 10)
            "generalization_gap": (run.val["loss"][-1] - statistics.fmean(losses[-FINAL_WINDOW:])
                                   if run.val["loss"] and losses
                                   and run.val["loss"][-1] is not None else None),
            # the overfitting alarm (watches/generalization.py): its step and the best before it
            "overfitting_step": overfit["step"] if overfit else None,
            # --early-stop / --restore-best: what the run says it did at its end
            "stopped_early": (info.summary or {}).get("stopped_early"),
            "restored_best": (info.summary or {}).get("restored_best"),
            "final_val_loss_restored": ((info.summary or {}).get("final_val_loss")
                                        if (info.summary or {}).get("restored_best") else None),
            "final_val_loss_averaged": averaged[-1] if averaged else None,
            "min_val_loss_averaged": min(_finite(averaged), default=None),
            "last_grad_norm": norms[-1] if norms else None,
            "max_grad_norm": max(norms, default=None),
            "clip_events": len(run.clips["step"]),
            "skipped_steps": len(steps["grad_norm"]) - len(norms),
            "steps_per_second": steps_per_second(run),
            "switches": len(run.switches),
        },
        "flops": None if flops is None else {
            "forward_per_step": flops["forward"],
            "backward_per_step": flops["backward"],
            "backward_over_forward": flops["backward"] / flops["forward"] if flops["forward"] else None,
            "per_module": {m: {"forward": f, "backward": b} for m, (f, b) in flops["per_module"].items()},
            "achieved_flops_per_second": timing["flops_per_second"] if timing else None,
            "mfu": timing["mfu"] if timing else None,
        },
        "memory": None if memory is None else {
            **{part: memory[part] for part in MEMORY_PARTS},
            "peak_saved_activation_bytes": max(m["saved_activation_bytes"]
                                               for m in run.samples["MemorySample"]),
            "cuda_peak_bytes": memory["cuda_peak_bytes"],
            "saved_bytes_per_module": layers["saved_bytes"] if layers else {},
        },
        "timing": None if timing is None else {
            "step_seconds": timing["step_seconds"],
            "phase_seconds": timing["phases"],
        },
        "system": system_summary(run.samples["SystemSample"]),
        "distributed": distributed_summary(run),
        "theory": theory_summary(run),
        "sharpness": sharpness_summary(run.samples["SharpnessSample"]),
        "noise_scale": noise_summary(run.samples["NoiseSample"]),
        "timeline": [timeline_entry(e) for e in run.events],
    }


def system_summary(samples: list[dict]) -> dict | None:
    if not samples:
        return None
    cpu = _finite(s["sample"].get("cpu_percent") for s in samples)
    rss = _finite(s["sample"].get("rss_bytes") for s in samples)
    return {"samples": len(samples),
            "cpu_percent_mean": statistics.fmean(cpu) if cpu else None,
            "rss_bytes_max": max(rss, default=None),
            "gpus": samples[-1]["sample"].get("gpus") or []}


def _mean(values) -> float | None:
    finite = _finite(values)
    return statistics.fmean(finite) if finite else None


def rank_means(samples: list[dict]) -> list[dict]:
    """Per rank, the mean compute, comm, wait and step seconds over the sampled steps, and
    the share of its step spent communicating and waiting (ratios of those means)."""
    ranks = sorted({r["rank"] for s in samples for r in s["ranks"]})
    out = []
    for rank in ranks:
        rows = [r for s in samples for r in s["ranks"] if r["rank"] == rank]
        means = {k: _mean(r[k] for r in rows) for k in RANK_PARTS}
        step = means["step_s"]
        out.append({"rank": rank, **means,
                    "comm_share": means["comm_s"] / step if step else None,
                    "wait_share": means["wait_s"] / step if step else None})
    return out


def slowest_rank(samples: list[dict]) -> int | None:
    """The rank whose compute was the longest most often (the lower rank on a tie)."""
    slowest = [s["slowest"] for s in samples]
    return max(sorted(set(slowest)), key=slowest.count) if slowest else None


def distributed_summary(run: RunData) -> dict | None:
    """Data parallel: where each rank's step went, bytes and bandwidth, over every DistSample.
    None for a single-process run."""
    samples, config = run.samples["DistSample"], run.info.config
    if not samples and (config.get("workers") or 1) <= 1:
        return None
    last = samples[-1] if samples else {}
    batch = config.get("batch_size")                        # per rank
    return {
        "world_size": last.get("world_size", config.get("workers")),
        "sync": last.get("sync", config.get("sync")),
        "straggle": config.get("straggle"),
        "samples": len(samples),
        "ranks": rank_means(samples),
        "slowest_rank": slowest_rank(samples),
        # a synchronous step ends when its slowest rank's does: max over ranks, then the mean
        "step_s_measured": _mean(max(r["step_s"] for r in s["ranks"]) for s in samples),
        "step_s_predicted": _mean(s["predicted_step_s"] for s in samples),
        **{k: _mean(s[k] for s in samples) for k in ("payload_bytes", "wire_bytes_per_rank",
                                                      "busiest_link_bytes", "algbw", "busbw")},
        "noise_scale": next((s["noise_scale"] for s in reversed(samples)
                             if s["noise_scale"] is not None), None),
        "global_batch": last.get("global_batch", batch * config["workers"] if batch else None),
        # None where the ranks hold no replicas to compare (fsdp, pp: each holds its part)
        "replicas_agree": None if not samples or any(s["replicas_agree"] is None for s in samples)
        else all(s["replicas_agree"] for s in samples),
        # --parallel: what each rank holds at the last sample, against ZeRO's formula
        "parallel": last.get("parallel", config.get("parallel", "ddp")),
        "optimizer_state_per_rank": [r.get("optimizer_state_bytes") for r in last.get("ranks", [])],
        "optimizer_state_predicted": last.get("optimizer_state_predicted"),
        # per rank: bytes held by kind and sent by collective, the bubble, and the formulas
        "held": held(samples),
    }


def timeline_entry(e: dict) -> dict:
    """One stored event as {step, kind, text}: the same line the events panel shows."""
    try:
        text = describe(event_from_payload(e["kind"], e))
    except (KeyError, TypeError):           # a payload from another schema: say what we can
        text = f"step {e['step']}: {e['kind']}"
    return {"step": e["step"], "time": _iso(e["time"]), "kind": e["kind"], "text": text}
