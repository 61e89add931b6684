"""What the ranks measured, turned into the sampled step's ``DistSample`` and the run's
summary: where each rank's step went, the bytes it held beside the formula of its mode,
and (pp) its bubble beside (p-1)/(m+p-1). A mixin of ``DataParallel`` (ddp.py).
"""

from __future__ import annotations

from lsml_tui.profilers import comm
from lsml_tui.trainer.events import DistSample

TIMES = ("compute_s", "comm_s", "wait_s", "step_s")
KINDS = ("param", "grad", "optimizer_state")
# what each mode shards (ZeRO's stages; pp: each stage its blocks, about 1/N of each kind)
SHARDS = {"ddp": (), "zero1": ("optimizer_state",), "fsdp": KINDS, "tp": KINDS, "pp": KINDS}


class Measured:
    """Rank 0's bookkeeping of the sampled steps (every rank's rows arrive in a table)."""

    def predicted(self, trainer, ranks: list[dict]) -> dict:
        """Bytes per rank by the formula: a whole replica of what the mode does not shard,
        the total over the ranks / N of what it shards."""
        shards = SHARDS[self.parallel]
        return {f"{k}_predicted": comm.sharded_bytes(ranks, f"{k}_bytes", k in shards)
                for k in KINDS}

    def bubble_predicted(self) -> float | None:
        return None

    def comm_predicted(self, trainer) -> list[float] | None:
        """Bytes each rank sends per step by the formula. DDP: a ring all-reduce of the
        gradients, 2(N-1)/N x M; ZeRO-1 as torch builds it: that, then each rank broadcasts
        the parameters it updated, (N-1) x M/N more: 3(N-1)/N x M (other --sync: None)."""
        if self.sync != "allreduce":
            return None
        n, m = self.size, sum(p.numel() * p.element_size() for p in trainer.params)
        return [(3 if self.parallel == "zero1" else 2) * (n - 1) / n * m] * n

    def _sample(self, trainer, table: list[dict]) -> DistSample:
        ranks = comm.ranks_breakdown(table)
        for r in ranks:
            acc = self.totals.setdefault(r["rank"], {k: 0.0 for k in TIMES})
            for k in TIMES + ("bubble_fraction",):
                if k in r:
                    acc[k] = acc.get(k, 0.0) + r[k]
        self.samples += 1
        steps = [r["step_s"] for r in ranks]
        computes = [r["compute_s"] for r in ranks]
        payload = max(r["payload_bytes"] for r in ranks)
        comm_time = max(r["comm_s"] + r["wait_s"] for r in ranks)
        local_sq = sum(r["local_sq_norm"] for r in table) / self.size
        big_sq = (trainer.last_grad_norm or 0.0) ** 2
        b = trainer.cfg.batch_size      # each rank's gradient before DDP averages it: ddp only
        noise = self.noise.update(local_sq, big_sq, b, b * self.size) if self.whole else None
        own = [c - r["delay_s"] for c, r in zip(computes, ranks)]
        predicted = sum(own) / len(own) + self.max_delay if self.straggle else None
        wire = comm.wire_bytes(self.sync, payload, self.size)
        sample = DistSample(
            trainer.step - 1, self.size, self.sync, ranks,
            slowest=max(range(self.size), key=lambda i: computes[i]),
            spread_s=max(steps) - min(steps), predicted_step_s=predicted,
            payload_bytes=payload, wire_bytes_per_rank=wire["per_rank"],
            busiest_link_bytes=wire["busiest_link"],
            **comm.bandwidth(self.sync, payload, comm_time, self.size),
            noise_scale=noise, global_batch=self.global_batch,
            replicas_agree=len({r["param_sum"] for r in ranks}) == 1 if self.replicas else None,
            parallel=self.parallel, **self.predicted(trainer, ranks),
            bubble_predicted=self.bubble_predicted(),
            comm_predicted=self.comm_predicted(trainer))
        self.last = sample
        return sample

    def summary(self) -> dict:
        n = max(1, self.samples)
        ranks = [{"rank": r, **{k: v / n for k, v in acc.items()}}
                 for r, acc in sorted(self.totals.items())]
        last = self.last
        memory = {r["rank"]: {k: r[k] for k in (*comm.MEMORY, "cuda_peak_bytes", "comm_bytes",
                                                 "collectives")
                              if k in r}
                  for r in (last.ranks if last else [])}
        ranks = [{**r, **memory.get(r["rank"], {})} for r in ranks]
        return {"world_size": self.size, "sync": self.sync, "parallel": self.parallel,
                **{f"{k}_predicted": getattr(last, f"{k}_predicted") if last else None
                   for k in KINDS},
                "bubble_predicted": self.bubble_predicted(),
                "comm_predicted": last.comm_predicted if last else None,
                "ranks": ranks,
                "noise_scale": last.noise_scale if last else None,
                "replicas_identical": None if self.fingerprints is None
                else len(set(self.fingerprints)) == 1,
                "global_batch": self.global_batch}
