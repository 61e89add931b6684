"""Data parallel on torch.distributed: the process group, DDP, and the per-step exchange
that keeps every replica applying the same commands at the same step.

``DataParallel`` is one rank of N; it answers the loop's calls as ``Alone`` (world.py)
does for one process, with collectives where the ranks must agree.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import queue
import random
import time
from contextlib import nullcontext
from datetime import timedelta

import torch
import torch.distributed as dist

from lsml_tui.profilers import comm
from lsml_tui.profilers.collectives import CollectiveMeter
from lsml_tui.profilers.memory import memory_breakdown
from lsml_tui.profilers.noise import NoiseScale
from lsml_tui.trainer.device import resolve_device
from lsml_tui.trainer.optim.optimizers import local
from lsml_tui.trainer.parallel.hooks import CommTimer, hook_for
from lsml_tui.trainer.parallel.measure import Measured
from lsml_tui.trainer.parallel.world import Alone, World, data_seed, fingerprint, world_from_env
from lsml_tui.trainer.validate import parse_straggle


def join(cfg, kind: type | None = None) -> "DataParallel":
    """This process's rank of the group its environment names, on its device, started: a
    `kind` of DataParallel (parallel/modes.py picks it from --parallel), DataParallel itself
    by default."""
    world = world_from_env()
    device = resolve_device(cfg.device)
    if device.type == "cuda":                   # one GPU per rank on each machine
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    dp = (kind or DataParallel)(world, cfg, device)
    dp.start()
    return dp


class DataParallel(Measured, Alone):
    """One of N ranks. Rank 0 records and takes commands; every rank applies them at the
    step rank 0 shipped them in, so the replicas never differ."""

    data_parallel = True    # each rank trains on its own batches (ddp, zero1, fsdp)
    whole = True            # each rank holds the whole model

    def __init__(self, world: World, cfg, device: torch.device):
        self.world, self.rank, self.size = world, world.rank, world.size
        self.recorder = world.rank == 0
        # data parallel: each rank draws its own batches; tp and pp: rank 0's, every rank
        self.data_rank = self.rank if self.data_parallel else 0
        self.global_batch = cfg.batch_size * (self.size if self.data_parallel else 1)
        self.loss_ranks = self.size                     # ranks whose losses read_back averages
        # one rank validates a whole replica; split weights need every rank in the forward
        self.validates = self.recorder or not self.whole
        self.cfg, self.device = cfg, device
        self.sync = cfg.sync
        self.parallel = getattr(cfg, "parallel", "ddp")
        self.sharded = self.parallel != "ddp"           # the optimizer state is split
        self.straggle = parse_straggle(cfg.straggle) if cfg.straggle else ()
        # E[max injected delay] is fixed by the spec (a Monte Carlo estimate for mixed specs):
        # worked out once, not on every sample
        self.max_delay = comm.expected_max_delay(self.straggle, self.size) \
            if self.straggle else None
        self._rng = random.Random(data_seed(cfg.seed, world.rank))
        self.timer = CommTimer()
        self.meter: CollectiveMeter | None = None       # on a step before a sampled one
        self.comm_row = CollectiveMeter(0, 1).fields()  # what it measured (zeros until then)
        self._inbox: list = []                          # shipped, applied at the next step
        self._pending: queue.SimpleQueue = queue.SimpleQueue()   # rank 0's, see attach
        self._marks: dict[str, float] = {}
        self._delay = 0.0
        self.noise = NoiseScale()
        self.totals: dict[int, dict] = {}               # rank -> summed breakdown (rank 0)
        self.samples = 0
        self.last = None                                # the last DistSample (rank 0)
        self.fingerprints: list[float] | None = None   # each rank's weights, at the end

    def start(self) -> None:
        """Join the group (gloo on CPU, NCCL on CUDA) with the run's collective timeout."""
        backend = "nccl" if self.device.type == "cuda" else "gloo"
        if self.device.type == "cpu":           # ranks share the cores: cores / N threads each
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // self.world.local_size))
        dist.init_process_group(backend, rank=self.rank, world_size=self.size,
                                timeout=timedelta(seconds=self.cfg.dist_timeout))

    def close(self) -> None:
        if self.meter is not None:                      # a step that failed while metered
            self.meter.__exit__(None, None, None)
            self.meter = None
        if dist.is_initialized():
            # Tear down together: a rank that exits while its peer still talks to it can die
            # in gloo's threads at interpreter exit (SIGABRT; about 1 torchrun run in 5 under
            # load without this, 1 in 45 with it). A peer gone by now changes nothing.
            with contextlib.suppress(RuntimeError):
                dist.barrier()
            dist.destroy_process_group()

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """DDP around `model` (again after a norm switch; DDP broadcasts rank 0's weights)."""
        # PowerSGD starts collectives from its futures' callbacks; on gloo those run on
        # gloo's threads and race with the next bucket's, so it gets one bucket there.
        one_bucket = self.sync == "powersgd" and self.device.type != "cuda"
        ddp = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
            forward_sync_buffers=False,              # batch norm keeps per-rank statistics
            bucket_cap_mb=1 << 14 if one_bucket else None)
        state, hook = hook_for(self.sync)
        ddp.register_comm_hook(state, self.timer.wrap(hook))
        return ddp

    def shard(self, optimizer):
        """--parallel zero1: the same optimizer, its state sharded across the ranks
        (ZeroRedundancyOptimizer: each rank updates its own parameters, then broadcasts)."""
        if self.parallel != "zero1":
            return optimizer
        from torch.distributed.optim import ZeroRedundancyOptimizer
        groups = [{k: v for k, v in g.items() if k != "initial_lr"} for g in optimizer.param_groups]
        return ZeroRedundancyOptimizer(groups, optimizer_class=type(optimizer),
                                       **optimizer.defaults)

    # -- a step --------------------------------------------------------------------

    def begin(self, step: int, sampled: bool) -> None:
        every = self.cfg.sample_every       # the collectives: on the step before a sampled one
        if step % every == (every // 2 - 1) % every and self.meter is None:
            self.meter = CollectiveMeter(self.rank, self.size)
            self.meter.__enter__()
        self.timer.on = sampled
        if sampled:
            self.timer.reset()
            self._marks = {"start": self._now()}

    def delay(self) -> float:
        """The straggler model: seconds to wait before a backward (the rank's own stream)."""
        return sum(self._rng.expovariate(1 / s) if r is None else s
                   for r, s in self.straggle if r is None or r == self.rank)

    def before_backward(self) -> None:
        delay = self.delay()
        if self.timer.on:
            self._marks["forward"] = self._now()
        if delay:
            time.sleep(delay)
        self._delay = delay

    def read_back(self, loss: torch.Tensor, norm: torch.Tensor) -> tuple[float, float]:
        """The mean loss over ranks and the (already global) gradient norm, in one
        all-reduce that also ships rank 0's new commands to every rank."""
        if self.timer.on:
            self._marks["backward"] = self._now()
        with self.quiet():
            return self._read_back(loss, norm)

    def quiet(self):
        """Our own exchanges (loss, commands, norms) are left out of the collectives."""
        return self.meter.paused() if self.meter is not None else nullcontext()

    def _read_back(self, loss: torch.Tensor, norm: torch.Tensor) -> tuple[float, float]:
        payload = self._outgoing()
        head = torch.stack([loss.detach().float(),
                            torch.tensor(float(len(payload)), device=loss.device)])
        dist.all_reduce(head)
        loss_sum, n_bytes, norm_v = torch.cat([head, norm.float().reshape(1)]).tolist()
        self._receive(payload, int(n_bytes))
        return loss_sum / self.loss_ranks, norm_v

    def end_step(self, trainer) -> None:
        """On a sampled step: gather every rank's timings on rank 0 and record them."""
        if self.meter is not None:
            self.meter.__exit__(None, None, None)
            self.comm_row, self.meter = self.meter.fields(), None
        if not self.timer.on:
            return
        self.timer.on = False
        m, t = self._marks, self.timer
        end = self._now()
        launched = t.last_launch if t.last_launch is not None else m["backward"]
        row = {"forward_s": m["forward"] - m["start"], "backward_s": m["backward"] - m["forward"],
               "compute_s": launched - m["start"], "exposed_s": max(0.0, m["backward"] - launched),
               "step_s": end - m["start"], "comm_busy_s": t.busy,
               "payload_bytes": float(t.payload_bytes), "local_sq_norm": t.local_sq,
               "delay_s": self._delay, "param_sum": self.fingerprint(trainer),
               "pid": float(os.getpid()), **self.held(trainer),
               "activation_bytes": float(trainer.profiler.memory.get("saved_activation_bytes", 0)),
               "cuda_peak_bytes": float(torch.cuda.max_memory_allocated(self.device))
               if self.device.type == "cuda" else 0.0,
               "pipeline_s": 0.0, **self.comm_row, **self.step_row()}
        mine = torch.tensor([row[f] for f in comm.FIELDS], dtype=torch.float64, device=self.device)
        rows = [torch.empty_like(mine) for _ in range(self.size)]
        dist.all_gather(rows, mine)
        if self.recorder:
            table = [dict(zip(comm.FIELDS, r.tolist())) for r in rows]
            trainer.emit_sample(self._sample(trainer, table))

    def step_row(self) -> dict:
        """What the mode measures itself on a sampled step, over the row's defaults."""
        return {}

    def held(self, trainer) -> dict:
        """The bytes this rank holds of parameters, gradients and (its shard of) the
        optimizer state."""
        return memory_breakdown(trainer.model, local(trainer.optimizer).state, 0)

    def fingerprint(self, trainer) -> float:
        """The rank's replica in one float (0 where the ranks hold no replicas)."""
        return fingerprint(self.replicated(trainer.params)) if self.replicas else 0.0

    def replicated(self, params) -> list:
        """The parameters every rank holds a whole copy of."""
        return params

    def finish(self, trainer) -> None:
        if not self.replicas:
            return
        mine = torch.tensor([self.fingerprint(trainer)], dtype=torch.float64, device=self.device)
        every = [torch.empty_like(mine) for _ in range(self.size)]
        try:
            dist.all_gather(every, mine)
        except Exception:  # a rank is gone: the run's own error says so
            return
        self.fingerprints = [float(t.item()) for t in every]

    # -- commands ------------------------------------------------------------------

    def commands(self, inbox: queue.SimpleQueue, wait: bool, flush) -> list:
        """Apply what the last step shipped; while paused, exchange every IDLE_POLL seconds
        (rank 0 waits for a command, the others wait in the broadcast)."""
        if not wait:
            out, self._inbox = self._inbox, []
            return out
        fresh = super().commands(inbox, wait=True, flush=flush) if self.recorder else []
        payload = pickle.dumps(fresh) if fresh else b""
        size = torch.tensor([len(payload)], dtype=torch.int64, device=self.device)
        dist.broadcast(size, 0)
        self._receive(payload, int(size.item()))
        out, self._inbox = self._inbox, []
        return out

    def _outgoing(self) -> bytes:
        if not self.recorder or self._pending.empty():
            return b""
        return pickle.dumps(Alone.commands(self, self._pending, wait=False, flush=None))

    def attach(self, pending: queue.SimpleQueue) -> None:
        """Rank 0's command queue (the trainer's), drained into each step's exchange."""
        self._pending = pending

    def _receive(self, payload: bytes, n_bytes: int) -> None:
        if n_bytes == 0:
            return
        buf = torch.frombuffer(bytearray(payload), dtype=torch.uint8) if self.recorder else \
            torch.empty(n_bytes, dtype=torch.uint8)
        buf = buf.to(self.device)
        dist.broadcast(buf, 0)
        self._inbox += pickle.loads(buf.cpu().numpy().tobytes())

    # -- measurements ------------------------------------------------------------

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)     # sampled steps only
        return time.perf_counter()
