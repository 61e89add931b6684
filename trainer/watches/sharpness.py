"""--sharpness-every K: the Hessian's top eigenvalue on a fixed batch every K steps, against
the step-size limit of the optimizer in use (profilers/sharpness.py). Each measurement is
a few dozen Hessian-vector products, so it is sampled; its cost is a benchmark figure."""

from __future__ import annotations

import time

import torch

from lsml_tui.profilers import sharpness
from lsml_tui.trainer.events import SharpnessSample

ADAM = ("adam", "adamw")        # measured preconditioned, against Adam's own limit


class SharpnessWatch:
    def __init__(self, trainer, every: int):
        cfg = trainer.cfg
        gen = torch.Generator(trainer.gen_device).manual_seed(cfg.seed + 2)
        self.x, self.y = trainer.task.batch("train", cfg.batch_size, gen)   # fixed for the run
        self.every = every
        self.vectors = torch.Generator().manual_seed(cfg.seed + 3)
        self.last: SharpnessSample | None = None

    def measure(self, trainer) -> SharpnessSample | None:
        """One measurement at the trainer's current weights (None for Adam before its first
        step: its preconditioner does not exist yet)."""
        name, model = trainer.optimizer_name, trainer.model
        params = [p for p in model.parameters() if p.requires_grad]
        pre = sharpness.adam_preconditioner(trainer.optimizer, params) if name in ADAM else None
        if name in ADAM and pre is None:
            return None
        lr = trainer.optimizer.param_groups[0]["lr"]
        t0 = time.perf_counter()
        value, iters = sharpness.top_eigenvalue(
            lambda: trainer.task.loss(model(self.x), self.y), params, precondition=pre,
            generator=self.vectors)
        limit = sharpness.threshold(name, lr, trainer.hparams.get("momentum"),
                                    trainer.hparams.get("beta1"))
        self.last = SharpnessSample(trainer.step, value, limit, pre is not None, iters,
                                    time.perf_counter() - t0)
        return self.last
