"""A watched script under torch.distributed (its own DDP, started by torchrun): rank 0
records, the other ranks record nothing; every `sample_every` steps all ranks exchange,
in one ``all_gather``, their mean step time and mean time to the end of their first
forward (data and forward: what a rank does before its first collective, where a
straggler shows, since the others then wait for it in the all-reduce), and rank 0's stop
and lr, so every replica stops or changes its learning rate at the same step. Only that
exchange is added, on sampled steps: no collective on an ordinary step.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from lsml_tui.trainer.events import DistSample, Logged, Notice
from lsml_tui.trainer.parallel.world import fingerprint

STRAGGLER = 1.2         # a rank this many times slower than the fastest is named


def world() -> tuple[int, int]:
    """(rank, world size) of the group this process is in; (0, 1) alone."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class Ranks:
    """A part of ``WatchedRun`` (run.py): stop and lr reach every rank at the same step."""

    def ask_stop(self) -> str:
        if self.world == 1:
            self.should_stop = True
            return f"stop requested before step {self.step} (run.should_stop is True)"
        self._asked["stop"] = 1.0
        return f"every rank stops after step {self._next_exchange() - 1}"

    def ask_lr_factor(self, factor: float) -> str:
        if self.world == 1:
            self.lr_factor = factor
            return "from the next step"
        self._asked["lr_factor"] = factor
        return f"on every rank from step {self._next_exchange()}"

    def _next_exchange(self) -> int:
        return (self.step // self.sample_every + 1) * self.sample_every

    def _exchange(self) -> None:
        """Every rank, at the same step: step times in, rank 0's stop and lr out."""
        steps = max(1, self._period[2])
        seconds, busy = self._period[0] / steps, self._period[1] / steps
        self._period = [0.0, 0.0, 0]
        device = (torch.device("cuda", torch.cuda.current_device())
                  if dist.get_backend() == "nccl" else torch.device("cpu"))
        mine = torch.tensor([seconds, busy, self._asked.get("stop", 0.0),
                             self._asked.get("lr_factor", self.lr_factor),
                             fingerprint(self.params)], dtype=torch.float64, device=device)
        rows = [torch.empty_like(mine) for _ in range(self.world)]
        dist.all_gather(rows, mine)
        table = [r.tolist() for r in rows]
        self._asked = {}
        if table[0][2]:
            self.should_stop = True
        self.lr_factor = table[0][3]
        if self.rank != 0:
            return
        busy = [r[1] for r in table]
        self.emit_sample(Logged(self.step - 1, {
            **{f"rank_step_s/{r}": row[0] for r, row in enumerate(table)},
            **{f"rank_data_forward_s/{r}": b for r, b in enumerate(busy)}}))
        slowest = max(range(self.world), key=busy.__getitem__)
        self.emit_sample(self._sample(table, slowest))
        if min(busy) > 0 and busy[slowest] > STRAGGLER * min(busy) \
                and slowest != self._straggler:
            self._straggler = slowest
            self.emit(Notice(self.step - 1, f"rank {slowest} is the straggler: its data and "
                                            f"forward take {busy[slowest] * 1e3:.3g} ms a step "
                                            f"against {min(busy) * 1e3:.3g} ms on the fastest; "
                                            f"the others wait for it in the all-reduce"))

    def _sample(self, table: list[list[float]], slowest: int) -> DistSample:
        """The data-parallel panel's sample for a watched DDP script: per rank, its data and
        forward (its own work before the first collective), the wait for the slowest rank's,
        and the rest of the step (backward, all-reduce, update). No bytes: the script's
        DDP does its own communication."""
        worst = table[slowest][1]
        ranks = [{"rank": r, "compute_s": row[1], "wait_s": worst - row[1],
                  "comm_s": max(0.0, row[0] - worst), "step_s": row[0]}
                 for r, row in enumerate(table)]
        steps = [row[0] for row in table]
        return DistSample(
            self.step - 1, self.world, "watch", ranks, slowest=slowest,
            spread_s=max(steps) - min(steps), predicted_step_s=None, payload_bytes=None,
            wire_bytes_per_rank=None, busiest_link_bytes=None, algbw=None, busbw=None,
            noise_scale=None, global_batch=self._last_examples * self.world,
            replicas_agree=len({row[4] for row in table}) == 1)
