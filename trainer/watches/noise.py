"""--noise-scale-every K: the gradient noise scale B_simple in one process, every K steps
(profilers/noise.py). A measurement is one extra forward and backward of a batch drawn for
it, cut into equal parts; the run's own batches, weights, .grad and BatchNorm statistics
are left as they were, so turning it on does not change the losses."""

from __future__ import annotations

import time

import torch

from lsml_tui.profilers.noise import NoiseScale, chunk_norms, parts_for
from lsml_tui.trainer.events import NoiseSample


class NoiseWatch:
    def __init__(self, trainer, every: int):
        cfg = trainer.cfg
        self.every, self.batch = every, cfg.batch_size
        self.parts = parts_for(cfg.batch_size)
        # its own stream of batches: the run's data stream stays the same with it on or off
        self.gen = torch.Generator(trainer.gen_device).manual_seed(cfg.seed + 4)
        self.estimate = NoiseScale()
        self.last: NoiseSample | None = None

    def measure(self, trainer) -> NoiseSample:
        t0 = time.perf_counter()
        model, task = trainer.model, trainer.task
        x, y = task.sample(self.batch, self.gen)           # i.i.d. examples (linear: too)
        params = [p for p in model.parameters() if p.requires_grad]
        buffers = [b.clone() for b in model.buffers()]     # BatchNorm's running statistics

        def loss_of(xs, ys):
            with trainer.precision.autocast():
                return task.loss(model(xs), ys)
        try:
            small, big, b_small, b_big = chunk_norms(loss_of, params, x, y, self.parts)
        finally:
            with torch.no_grad():
                for b, saved in zip(model.buffers(), buffers):
                    b.copy_(saved)
        value = self.estimate.update(small, big, b_small, b_big)
        self.last = NoiseSample(trainer.step - 1, value, self.estimate.g2, self.estimate.trace,
                                self.batch, b_small, time.perf_counter() - t0)
        return self.last

    def summary(self) -> dict:
        s = self.last
        return {"noise_scale": s and s.noise_scale, "noise_scale_batch": self.batch}
