"""Who this process is in a run: its rank in the group torchrun or our launcher started
(``world_from_env``), each rank's data stream (``data_seed``), and ``Alone``, the
one-process run the loop calls when there are no other ranks.

The loop calls the same methods on ``Alone`` and on ``DataParallel`` (ddp.py):
``wrap`` (the model), ``begin`` (a step), ``before_backward`` (an injected straggler
delay), ``grad_norms`` and ``local_grads`` (over every rank's part when the weights are
split), ``read_back`` (the loss and gradient norm, as one collective on N ranks),
``end_step`` (on sampled steps, every rank's timings gathered on rank 0), ``commands``
(what to apply before the next step), ``finish`` and ``summary``.
"""

from __future__ import annotations

import os
import queue
from dataclasses import dataclass

import torch

from lsml_tui.trainer.guard import grad_norms

IDLE_POLL = 0.5             # seconds between exchanges while the run is paused


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    local_rank: int
    local_size: int


def world_from_env() -> World | None:
    """The group torchrun (or our own launcher) started this process in, if any."""
    env = os.environ
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return None
    size = int(env["WORLD_SIZE"])
    return World(int(env["RANK"]), size, int(env.get("LOCAL_RANK", env["RANK"])),
                 int(env.get("LOCAL_WORLD_SIZE", size)))


def fingerprint(params) -> float:
    """A float64 sum of every weight: replicas that are bit-identical agree exactly."""
    with torch.no_grad():
        return float(sum(p.detach().double().sum() for p in params))


def data_seed(seed: int, rank: int) -> int:
    """Each rank draws its own batches; rank 0 draws what a single process would."""
    return seed + 10_007 * rank


class Alone:
    """One process: no collectives, commands straight from the queue."""

    rank, size, recorder = 0, 1, True
    data_rank = 0                   # whose batches this process draws (data_seed)
    sharded = False                 # the optimizer state is whole here
    replicas = True                 # every rank holds the whole model
    validates = True                # this rank computes validation losses
    pipelined = False               # a schedule runs forward and backward (pp)

    def grad_norms(self, params):
        """(per-parameter gradient norms, their global norm), over every rank's part."""
        return grad_norms(params)

    def local_grads(self, params) -> list[torch.Tensor]:
        """The gradient tensors this rank clips and checks in place."""
        return [p.grad for p in params if p.grad is not None]

    def shard(self, optimizer):
        return optimizer

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    def begin(self, step: int, sampled: bool) -> None:
        pass

    def before_backward(self) -> None:
        pass

    def read_back(self, loss: torch.Tensor, norm: torch.Tensor) -> tuple[float, float]:
        if loss.device.type == "cpu":       # .item() twice is the cheapest read here
            return loss.detach().float().item(), norm.float().item()
        loss_v, norm_v = torch.stack([loss.detach().float(), norm.float()]).tolist()
        return loss_v, norm_v               # one read-back (one device sync) on a GPU

    def end_step(self, trainer) -> None:
        pass

    def attach(self, pending: queue.SimpleQueue) -> None:
        pass

    def finish(self, trainer) -> None:
        """The run ended cleanly on every rank: compare the replicas once more."""

    def commands(self, inbox: queue.SimpleQueue, wait: bool, flush) -> list:
        """Commands to apply before the next step; `wait` blocks a while for one (paused)."""
        out = []
        if wait:
            flush()                                     # the UI sees 'paused' before we wait
            try:
                out.append(inbox.get(timeout=IDLE_POLL))
            except queue.Empty:
                return out
        while True:
            try:
                out.append(inbox.get_nowait())
            except queue.Empty:
                return out

    def summary(self) -> dict:
        return {"world_size": 1}

    def close(self) -> None:
        pass
