"""What a rank sends, collective by collective: every torch.distributed collective of a
step seen where it enters PyTorch's dispatcher (``c10d`` ops from ``dist.*`` calls, DDP's
comm hooks, FSDP2 and pipelining; ``_c10d_functional`` ops from DTensor), with its bytes
and the time spent in the call.

Bytes sent follow the ring algorithms' convention (nccl-tests'): for a payload of M bytes
on N ranks an all-reduce sends 2(N-1)/N x M per rank, a reduce-scatter (N-1)/N x M of its
input, an all-gather (N-1) x its input (its shard), a broadcast (N-1) x M from the root,
a send M. The time is the call's: a collective launched asynchronously (FSDP's, DDP's) is
waited for elsewhere, so for those it is the launch only.
"""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from lsml_tui.profilers.comm import COLLECTIVES as KINDS

# op name (without its overload) -> (kind, which argument holds this rank's payload)
OPS = {"allreduce_": ("all_reduce", 0), "all_reduce": ("all_reduce", 0),
       "allreduce_coalesced_": ("all_reduce", 0), "all_reduce_coalesced": ("all_reduce", 0),
       "_allgather_base_": ("all_gather", 1), "allgather_": ("all_gather", 1),
       "allgather_into_tensor_coalesced_": ("all_gather", 1),
       "all_gather_into_tensor": ("all_gather", 0),
       "all_gather_into_tensor_coalesced": ("all_gather", 0),
       "_reduce_scatter_base_": ("reduce_scatter", 1), "reduce_scatter_": ("reduce_scatter", 1),
       "reduce_scatter_tensor_coalesced_": ("reduce_scatter", 1),
       "reduce_scatter_tensor": ("reduce_scatter", 0),
       "reduce_scatter_tensor_coalesced": ("reduce_scatter", 0),
       "broadcast_": ("broadcast", 0), "broadcast": ("broadcast", 0),
       "send": ("send_recv", 0), "recv_": ("send_recv", None),
       "gather_": ("other", 1), "scatter_": ("other", 1)}    # --sync ps


def nbytes(arg) -> int:
    """Bytes of the tensors in `arg` (a tensor or nested lists of them)."""
    if isinstance(arg, torch.Tensor):
        return arg.numel() * arg.element_size()
    if isinstance(arg, (list, tuple)):
        return sum(nbytes(a) for a in arg)
    return 0


def sent_bytes(kind: str, payload: int, n: int, root: bool = True) -> float:
    """What one rank sends for a payload of this rank's `payload` bytes (ring convention)."""
    if kind == "all_reduce":
        return 2 * (n - 1) / n * payload
    if kind == "reduce_scatter":
        return (n - 1) / n * payload
    if kind == "all_gather":
        return (n - 1) * payload
    if kind == "broadcast":
        return (n - 1) * payload if root else 0.0
    return float(payload)


class CollectiveMeter(TorchDispatchMode):
    """``with CollectiveMeter(rank, n) as m: <a step>``, then ``m.by_kind``: per kind,
    calls, bytes sent and seconds in the call. ``with m.paused():`` leaves some out."""

    def __init__(self, rank: int, n: int):
        super().__init__()
        self.rank, self.n = rank, n
        self.by_kind: dict[str, dict] = defaultdict(lambda: {"calls": 0, "bytes": 0.0,
                                                             "seconds": 0.0})
        self._off = False

    @contextmanager
    def paused(self):
        self._off, before = True, self._off
        try:
            yield
        finally:
            self._off = before

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self._off or func.namespace not in ("c10d", "_c10d_functional"):
            return func(*args, **kwargs)
        name = func.__name__.split(".")[0]
        if name not in OPS:                 # a wait, a wrapper: nothing sent
            return func(*args, **kwargs)
        kind, where = OPS[name]
        t0 = time.perf_counter()
        out = func(*args, **kwargs)
        seconds = time.perf_counter() - t0
        payload = 0 if where is None else nbytes(args[where])
        root = name != "broadcast_" or args[2] == self.rank
        row = self.by_kind[kind]
        row["calls"] += 1
        row["bytes"] += sent_bytes(kind, payload, self.n, root)
        row["seconds"] += seconds
        return out

    def fields(self) -> dict:
        """The sampled row's fields: ``<kind>_bytes`` and ``<kind>_s`` for every kind."""
        out = {}
        for kind in KINDS:
            row = self.by_kind.get(kind, {"bytes": 0.0, "seconds": 0.0})
            out[f"{kind}_bytes"], out[f"{kind}_s"] = float(row["bytes"]), float(row["seconds"])
        return out
