"""--parallel pp: pipeline parallelism with ``torch.distributed.pipelining``.

The model's blocks are split into N contiguous stages, one per rank (the embeddings go
with the first, the final norm and head with the last). Each step's batch is cut into
--microbatches M; a schedule (GPipe: every forward, then every backward; 1F1B: one
forward, one backward in the steady state, at most N microbatches' activations held)
runs them through the stages, sending activations forward and their gradients back at
each stage boundary. Gradients are averaged over the microbatches (the schedule's
``scale_grads``), so a step is one process's step at the same batch.

A rank idles while it waits for its neighbour: the bubble. With equal stages it is
(p-1)/(m+p-1) of the step (Huang et al. 2019). Each rank measures its own: the time its
stage computes (each microbatch's forward and backward) against the schedule's span.
"""

from __future__ import annotations

import time

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

from lsml_tui.profilers import comm
from lsml_tui.trainer.guard import grad_norms
from lsml_tui.trainer.parallel.ddp import DataParallel

SCHEDULES = {"gpipe": ScheduleGPipe, "1f1b": Schedule1F1B}


def stage_blocks(blocks: int, stages: int, stage: int) -> range:
    """The blocks stage `stage` of `stages` runs: contiguous, as even as they divide."""
    return range(stage * blocks // stages, (stage + 1) * blocks // stages)


class Stage(nn.Module):
    """One rank's part of the model: (embeddings,) its blocks, (final norm and head)."""

    def __init__(self, model: nn.Module, family: str, mine: range, first: bool, last: bool):
        super().__init__()
        self.model, self.family, self.mine = model, family, mine
        self.is_first, self.is_last = first, last

    def forward(self, x):
        m = self.model
        if self.is_first and self.family == "transformer":     # (B, T) ids -> (B, T, C)
            x = m.drop(m.tok_emb(x) + m.pos_emb(torch.arange(x.shape[1], device=x.device)))
        for i in self.mine:
            x = m.blocks[i](x)
        if self.is_last:
            x = m.head(m.norm_f(x) if self.family == "transformer" else x)
        return x


def keep_stage(model: nn.Module, family: str, mine: range, first: bool, last: bool) -> None:
    """Drop what other stages hold from `model`, so this rank holds (and its optimizer
    updates) its stage only; the names of what is left stay the model's."""
    for i in range(len(model.blocks)):
        if i not in mine:
            model.blocks[i] = nn.Identity()
    if family == "transformer" and not first:
        model.tok_emb, model.pos_emb = nn.Identity(), nn.Identity()
    if not last:
        model.head = nn.Identity()
        if family == "transformer":
            model.norm_f = nn.Identity()


class PipelineParallel(DataParallel):
    """One stage of a pipeline: rank r runs stage r on every microbatch of rank 0's batch."""

    sharded = True          # the optimizer covers this stage only: no live switch
    whole = False           # validation runs through every stage
    replicas = False        # each rank holds different blocks
    data_parallel = False   # one batch a step, one process's
    pipelined = True        # the schedule runs forward and backward together

    def __init__(self, world, cfg, device):
        super().__init__(world, cfg, device)
        self.loss_ranks = 1                          # the last stage alone has the loss
        self.is_first, self.is_last = self.rank == 0, self.rank == self.size - 1
        self.schedule = None
        self.busy = self.span = 0.0                  # seconds: own compute, the schedule's

    def wrap(self, model: nn.Module) -> nn.Module:
        mine = stage_blocks(len(model.blocks), self.size, self.rank)
        keep_stage(model, self.cfg.model, mine, self.is_first, self.is_last)
        part = Stage(model, self.cfg.model, mine, self.is_first, self.is_last)
        self.stage = PipelineStage(part, self.rank, self.size, self.device)
        for name in ("forward_one_chunk", "backward_one_chunk"):
            setattr(self.stage, name, self._timed(getattr(self.stage, name),
                                                  backward=name.startswith("backward")))
        return model

    def _timed(self, chunk, backward: bool):
        """The stage's own work on one microbatch, timed (the straggler delay included)."""
        def run(*args, **kwargs):
            t0 = time.perf_counter()
            if backward:
                delay = self.delay()
                if delay:
                    time.sleep(delay)
            try:
                return chunk(*args, **kwargs)
            finally:
                self.busy += time.perf_counter() - t0
        return run

    def _schedule(self, loss_fn):
        if self.schedule is None:
            self.schedule = SCHEDULES[self.cfg.pipeline_schedule](
                self.stage, self.cfg.microbatches, loss_fn=loss_fn)
        return self.schedule

    def _run(self, method: str, x, y, loss_fn) -> torch.Tensor:
        """Every microbatch of (x, y) through the schedule; the mean loss on the last stage
        (0 on the others: read_back sums over ranks)."""
        run = getattr(self._schedule(loss_fn), method)
        losses: list = []
        last = {"target": y, "losses": losses} if self.is_last else {}
        run(*((x,) if self.is_first else ()), **last)
        return torch.stack(losses).mean() if losses else torch.zeros((), device=self.device)

    def forward_backward(self, x, y, loss_fn) -> torch.Tensor:
        """One step's forward and backward over the microbatches, timed (the bubble)."""
        self.busy, t0 = 0.0, time.perf_counter()
        loss = self._run("step", x, y, loss_fn)
        self.span = time.perf_counter() - t0
        if self.timer.on:
            self._marks["forward"] = self._now()
        return loss

    def val_loss(self, trainer) -> float:
        """The validation batches through the stages, forward only; every rank gets it."""
        gen = torch.Generator(trainer.gen_device).manual_seed(trainer.cfg.seed + 1)
        losses = [self._run("eval", *trainer.task.batch("val", trainer.cfg.batch_size, gen),
                            trainer.task.loss) for _ in range(trainer.cfg.val_batches)]
        mean = torch.stack(losses).mean().reshape(1)
        dist.broadcast(mean, self.size - 1)
        return float(mean.item())

    def grad_norms(self, params):
        """Each stage's own per-parameter norms; the global norm over every stage."""
        per, norm = grad_norms(params)
        sq = norm.square().reshape(1)
        with self.quiet():
            dist.all_reduce(sq)
        return per, sq.sqrt().reshape(())

    def comm_predicted(self, trainer) -> list[float]:
        """Each stage boundary carries the batch's activations forward and their gradients
        back (B x T x C for the transformer, B x width for the MLP, over all microbatches):
        a stage sends the first unless it is the last, the second unless it is the first."""
        cfg, n = self.cfg, self.size
        tokens = cfg.batch_size * (cfg.seq_len if cfg.model == "transformer" else 1)
        size = trainer.params[0].element_size()     # activations in the weights' dtype
        boundary = tokens * cfg.width * size
        return [boundary * ((r < n - 1) + (r > 0)) for r in range(n)]

    def bubble_predicted(self) -> float:
        return comm.bubble(self.size, self.cfg.microbatches)

    def step_row(self) -> dict:
        """The sampled step's row: compute is the stage's own work, the rest of the
        schedule's span is idle (waiting for a neighbour's activations or gradients)."""
        return {"compute_s": self.busy, "exposed_s": self.span - self.busy,
                "pipeline_s": self.span}
