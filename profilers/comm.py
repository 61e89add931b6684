"""Parallel arithmetic on measured numbers: where a synchronous step's time goes,
bandwidth and stragglers (the gradient noise scale is profilers/noise.py), ZeRO's bytes per
rank, the bytes each collective sent, and the pipeline's bubble. Plain data in, plain data
out.
"""

from __future__ import annotations

import random

COLLECTIVES = ("all_reduce", "all_gather", "reduce_scatter", "broadcast", "send_recv", "other")
# One row per rank, in this order, as the ranks gather them on a sampled step.
FIELDS = ("forward_s", "backward_s", "compute_s", "exposed_s", "step_s", "comm_busy_s",
          "payload_bytes", "local_sq_norm", "delay_s", "param_sum", "pid",
          "param_bytes", "grad_bytes", "optimizer_state_bytes",     # what the rank holds
          "activation_bytes", "cuda_peak_bytes",    # (0: not on CUDA)
          "pipeline_s",                         # pp: the schedule's span (0: not a pipeline)
          # bytes each rank sent and seconds in the calls, per kind of collective
          *(f"{kind}_{unit}" for kind in COLLECTIVES for unit in ("bytes", "s")))
MEMORY = ("param_bytes", "grad_bytes", "optimizer_state_bytes", "activation_bytes")


def sharded_bytes(ranks: list[dict], key: str, sharded: bool) -> float | None:
    """What each rank should hold of `key` (ZeRO, Rajbhandari et al. 2019): the total over
    the ranks divided by N when the mode shards it, else all of one replica's."""
    values = [r[key] for r in ranks if r.get(key) is not None]
    if len(values) != len(ranks) or not values:
        return None
    return sum(values) / len(values) if sharded else max(values)


def harmonic(n: int) -> float:
    """H_n = 1 + 1/2 + ... + 1/n: E[max of n i.i.d. Exp(1)] (about ln n + 0.577)."""
    return sum(1.0 / k for k in range(1, n + 1))


def ranks_breakdown(rows: list[dict]) -> list[dict]:
    """Split each rank's step: compute (its own forward and backward, injected delay included),
    wait (for the slowest rank's compute: max_j compute_j - compute_r, at most what was
    exposed after its own compute) and communication (the rest of what was exposed)."""
    slowest = max(r["compute_s"] for r in rows)
    out = []
    for rank, r in enumerate(rows):
        wait = min(max(0.0, slowest - r["compute_s"]), r["exposed_s"])
        out.append({"rank": rank, "compute_s": r["compute_s"], "wait_s": wait,
                    "comm_s": max(0.0, r["exposed_s"] - wait), "step_s": r["step_s"],
                    "forward_s": r["forward_s"], "backward_s": r["backward_s"],
                    "comm_busy_s": r["comm_busy_s"], "delay_s": r["delay_s"],
                    "payload_bytes": int(r["payload_bytes"]), "param_sum": r["param_sum"],
                    "pid": int(r["pid"]), **{k: int(r[k]) for k in MEMORY if k in r},
                    **({"cuda_peak_bytes": int(r["cuda_peak_bytes"])}
                       if r.get("cuda_peak_bytes") else {}),
                    **collectives(r)})
    spans = [r.get("pipeline_s", 0.0) for r in rows]
    if all(spans):                                  # a pipeline: each rank's bubble
        for r, bubble in zip(out, bubbles([r["compute_s"] for r in rows], spans)):
            r["bubble_fraction"] = bubble
    return out


def collectives(row: dict) -> dict:
    """A rank's bytes sent in a step, in all and per kind of collective (with seconds)."""
    kinds = {k: {"bytes": row[f"{k}_bytes"], "s": row[f"{k}_s"]} for k in COLLECTIVES
             if row.get(f"{k}_bytes")}
    if not any(f"{k}_bytes" in row for k in COLLECTIVES):
        return {}
    return {"comm_bytes": sum(v["bytes"] for v in kinds.values()), "collectives": kinds}


def bubble(stages: int, microbatches: int) -> float:
    """The pipeline's idle share of a step with p equal stages and m microbatches, GPipe's
    and 1F1B's alike (Huang et al. 2019): (p-1)/(m+p-1)."""
    return (stages - 1) / (microbatches + stages - 1)


def bubbles(busy: list[float], spans: list[float]) -> list[float]:
    """Each pipeline stage's idle share of the step: 1 - its own compute / the pipeline's
    span (the longest rank's, from the common start of the step to its last backward).
    With p equal stages and m microbatches it is (p-1)/(m+p-1) on every rank."""
    step = max(spans)
    return [max(0.0, 1.0 - b / step) for b in busy]


def _on_the_wire(sync: str, payload: float) -> float | None:
    """What the collective moves for M gradient bytes: bf16 halves it; PowerSGD's low-rank
    factors have no fixed size (None)."""
    return None if sync == "powersgd" else payload / 2 if sync == "bf16" else payload


def _link_factor(sync: str, n: int) -> float:
    """Bytes through the busiest link per byte moved. Ring all-reduce: 2(N-1) rounds of M/N
    each, 2(N-1)/N. Parameter server: every worker sends M to rank 0 and gets M back, so
    rank 0's link carries 2(N-1) M."""
    return 2.0 * (n - 1) if sync == "ps" else 2.0 * (n - 1) / n


def wire_bytes(sync: str, payload: float, n: int) -> dict:
    """Bytes each rank sends per step, and through the busiest link, by the algorithm's
    formula: ring 2(N-1)/N * M per rank and per link; a parameter server's worker 2 M, its
    rank 0 2(N-1) * M (see _link_factor)."""
    if n < 2:
        return {"per_rank": 0.0, "busiest_link": 0.0}
    moved = _on_the_wire(sync, payload)
    if moved is None:
        return {"per_rank": None, "busiest_link": None}
    busiest = _link_factor(sync, n) * moved
    return {"per_rank": 2.0 * moved if sync == "ps" else busiest, "busiest_link": busiest}


def bandwidth(sync: str, payload: float, seconds: float, n: int) -> dict:
    """nccl-tests' convention: algbw = bytes moved / time, busbw = algbw times the busiest
    link's factor (2(N-1)/N for all-reduce, 2(N-1) for a parameter server): the rate that
    link really ran at."""
    moved = _on_the_wire(sync, payload)
    if seconds <= 0 or n < 2 or moved is None:
        return {"algbw": None, "busbw": None}
    algbw = moved / seconds
    return {"algbw": algbw, "busbw": algbw * _link_factor(sync, n)}


def expected_max_delay(straggle: tuple, n: int, draws: int = 20_000) -> float:
    """E[max over ranks of the injected delay]. Exp(mean m) on every rank alone: m * H_N
    exactly; with fixed per-rank delays added, a seeded Monte Carlo estimate."""
    exp_mean = sum(s for rank, s in straggle if rank is None)
    fixed = [sum(s for rank, s in straggle if rank == r) for r in range(n)]
    if not any(fixed):
        return exp_mean * harmonic(n)
    rng = random.Random(0)
    total = 0.0
    for _ in range(draws):
        total += max(f + (rng.expovariate(1 / exp_mean) if exp_mean else 0.0) for f in fixed)
    return total / draws


def mean_delay(straggle: tuple, rank: int) -> float:
    """The delay a rank adds before each backward, on average."""
    return sum(s for r, s in straggle if r is None or r == rank)
