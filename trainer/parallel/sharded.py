"""What the sharded modes (fsdp, tp) share: ranks that hold parts of the weights as DTensors,
so the gradient norm, the bytes a rank holds and a weight fingerprint are taken from each
rank's local part and combined with one collective.

``Sharded`` answers the loop as ``DataParallel`` (ddp.py) does, without DDP: FSDP and
tensor parallelism do their own communication inside forward and backward.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

from lsml_tui.trainer.parallel.ddp import DataParallel


def local(t: torch.Tensor) -> torch.Tensor:
    """This rank's part of `t` (its shard of a DTensor; a plain tensor is all here)."""
    return t.to_local() if isinstance(t, DTensor) else t


def is_sharded(t: torch.Tensor) -> bool:
    """True when each rank holds a different part of `t` (a DTensor with a Shard placement)."""
    return isinstance(t, DTensor) and any(p.is_shard() for p in t.placements)


def global_grad_norms(params: list[torch.Tensor], n: int,
                      device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(each parameter's gradient L2 norm over all its shards, their global L2 norm), on
    every rank alike, in one all-reduce: a sharded gradient's squared norm is the sum of its
    shards' squared norms; a replicated one is counted once (each rank adds 1/N of it)."""
    sq = torch.zeros(len(params), dtype=torch.float32, device=device)
    present = [i for i, p in enumerate(params) if p.grad is not None]
    if present:
        parts = [local(params[i].grad) for i in present]
        norms = torch.stack(torch._foreach_norm(parts)).float()
        share = torch.tensor([1.0 if is_sharded(params[i].grad) else 1.0 / n for i in present],
                             device=device)
        sq[present] = norms.square() * share
    dist.all_reduce(sq)
    per = sq.sqrt()
    return per, torch.linalg.vector_norm(per)


class Sharded(DataParallel):
    """A rank of a mode that splits the weights themselves: no DDP around the model, the
    optimizer over the (local parts of the) parameters, nothing to switch live."""

    sharded = True          # optimizer and norm switches would rebuild the shards: refused
    whole = False           # each rank holds a part of the model
    replicas = False        # no rank holds the whole model: nothing to compare across ranks

    def replicated(self, params) -> list:
        return [local(p) for p in params if not is_sharded(p)]

    def shard(self, optimizer):
        return optimizer

    def grad_norms(self, params):
        with self.quiet():
            return global_grad_norms(params, self.size, self.device)

    def local_grads(self, params) -> list[torch.Tensor]:
        return [local(p.grad) for p in params if p.grad is not None]

    def predicted(self, trainer, ranks: list[dict]) -> dict:
        """Bytes per rank by the formula, from each tensor's global shape: a sharded tensor's
        bytes / N, a replicated one's whole (rank 0's tensors; every rank's have the shapes)."""
        def formula(tensors) -> float:
            return sum(t.numel() * t.element_size() / (self.size if is_sharded(t) else 1)
                       for t in tensors)
        state = [v for s in trainer.optimizer.state.values() for v in s.values()
                 if isinstance(v, torch.Tensor)]
        return {"param_predicted": formula(trainer.params),
                "grad_predicted": formula(p for p in trainer.params if p.requires_grad),
                "optimizer_state_predicted": formula(state)}

    def held(self, trainer) -> dict:
        """The bytes this rank holds: the local parts of parameters, gradients and state."""
        state = [local(v) for s in trainer.optimizer.state.values() for v in s.values()
                 if isinstance(v, torch.Tensor)]
        params = [local(p) for p in trainer.params]
        nbytes = lambda ts: sum(t.numel() * t.element_size() for t in ts)  # noqa: E731
        return {"param_bytes": nbytes(params),
                "grad_bytes": nbytes(p for p, q in zip(params, trainer.params) if q.requires_grad),
                "optimizer_state_bytes": nbytes(state)}
