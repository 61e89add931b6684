"""How ranks combine gradients (--sync): DDP comm hooks, each wrapped by one timer.

- allreduce: DDP's default (a ring all-reduce of each bucket, overlapped with backward).
- ps: a synchronous parameter server written from torch.distributed collectives: every
  rank sends its bucket to rank 0 (gather), rank 0 averages and sends the mean back
  (scatter). Both are direct sends to and from rank 0 on gloo and NCCL, a real star;
  gloo's ``reduce`` would not do, it is itself a ring.
- bf16, powersgd: DDP's own compression hooks (bf16 all-reduce; PowerSGD, rank 1).
"""

import time  # no `from __future__ import annotations`: DDP checks the hook's

# annotations as objects (bucket: dist.GradBucket)
import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks, powerSGD_hook

POWERSGD_START = 10         # steps of plain all-reduce before PowerSGD compresses


def parameter_server_hook(process_group, bucket: dist.GradBucket
                          ) -> torch.futures.Future[torch.Tensor]:
    """Gather every rank's bucket on rank 0, average it there, scatter the mean back."""
    group = process_group if process_group is not None else dist.group.WORLD
    n, rank = dist.get_world_size(group), dist.get_rank(group)
    grad = bucket.buffer()
    if rank == 0:
        parts = [torch.empty_like(grad) for _ in range(n)]
        dist.gather(grad, parts, dst=0, group=group)
        mean = torch.stack(parts).mean(0)                   # the server's one job
        dist.scatter(grad, [mean] * n, src=0, group=group)
    else:
        dist.gather(grad, dst=0, group=group)
        dist.scatter(grad, src=0, group=group)
    fut: torch.futures.Future = torch.futures.Future()
    fut.set_result(grad)
    return fut


def hook_for(sync: str):
    """(state, hook) for DDP's ``register_comm_hook``."""
    if sync == "ps":
        return None, parameter_server_hook
    if sync == "bf16":
        return None, default_hooks.bf16_compress_hook
    if sync == "powersgd":
        state = powerSGD_hook.PowerSGDState(process_group=None, matrix_approximation_rank=1,
                                            start_powerSGD_iter=POWERSGD_START)
        return state, powerSGD_hook.powerSGD_hook
    return None, default_hooks.allreduce_hook


class CommTimer:
    """Wraps a comm hook; on a sampled step it records, per bucket, when it was launched
    (its gradients were ready), how long its collective took, its bytes, and the local
    gradient's squared norm (before the ranks' gradients are combined)."""

    def __init__(self):
        self.on = False
        self.reset()

    def reset(self) -> None:
        self.last_launch: float | None = None
        self.busy = 0.0
        self.payload_bytes = 0
        self.local_sq = 0.0

    def wrap(self, inner):
        def timed(state, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
            if not self.on:
                return inner(state, bucket)
            buf = bucket.buffer()
            self.payload_bytes += buf.numel() * buf.element_size()
            self.local_sq += float(buf.detach().float().pow(2).sum())   # a sampled-step sync
            t0 = self.last_launch = time.perf_counter()
            fut = inner(state, bucket)

            def done(f):
                self.busy += time.perf_counter() - t0
                return f.value()
            return fut.then(done)
        return timed
