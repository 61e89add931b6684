"""--model linear: the distance to w* every step, and theory's numbers beside it.

The distance ||w - w*|| rides along with the loss in each step's read-back (no extra
sync); the predictions (profilers/theory.py) are worked out at the start and again
whenever the optimizer or the lr changes.
"""

from __future__ import annotations

import torch

from lsml_tui.profilers import theory
from lsml_tui.profilers.fit import fitted_rate
from lsml_tui.trainer.events import TheoryInfo


class TheoryWatch:
    def __init__(self, task, model: torch.nn.Module):
        self.task = task
        self.weight = model.w.weight                       # (1, D)
        self.w_star = task.w_star.to(self.weight.device, self.weight.dtype)
        self.eigenvalues = task.eigenvalues
        self.L, self.mu = float(task.eigenvalues.max()), float(task.eigenvalues.min())
        self.steps: list[int] = []
        self.distances: list[float] = []
        self.averaged: list[float] = []                    # ||w_avg - w*||, with --average
        self.info: TheoryInfo | None = None

    def distance(self, model: torch.nn.Module | None = None) -> torch.Tensor:
        """||w - w*|| on the device (read back with the loss), of `model` or the trained one."""
        weight = self.weight if model is None else model.w.weight
        return torch.linalg.vector_norm(weight.detach().flatten() - self.w_star)

    def observe(self, step: int, distance: float, averaged: float | None = None) -> None:
        self.steps.append(step)
        self.distances.append(distance)
        if averaged is not None:
            self.averaged.append(averaged)

    def predict(self, trainer) -> TheoryInfo:
        """Theory for the trainer's optimizer, lr and batch, from its current step on."""
        name, lr = trainer.optimizer_name, trainer.base_lr
        momentum = trainer.hparams.get("momentum")
        b = momentum or 0.0
        full = trainer.cfg.batch_size >= len(self.task.x)
        ball = None
        if name == "sgd" and not full:
            residuals = self.task.x @ self.task.w_star - self.task.y
            ball = theory.sgd_noise_ball(self.task.x, residuals, lr, trainer.cfg.batch_size)
        self.info = TheoryInfo(trainer.step, self.L, self.mu, self.L / self.mu, name, lr, momentum,
                               theory.contraction_rate(name, lr, self.eigenvalues, b),
                               theory.lr_limit(name, self.L, b), ball, float(self.distance()))
        return self.info

    def summary(self, clipped: int) -> dict:
        """The `theory` block of the summary."""
        i = self.info
        half = self.distances[len(self.distances) // 2:]
        return {
            "L": self.L, "mu": self.mu, "kappa": self.L / self.mu,
            "optimizer": i.optimizer if i else None, "lr": i.lr if i else None,
            "rate_theory": i.rate_theory if i else None,
            "rate_measured": fitted_rate(self.steps, self.distances),
            "lr_limit": i.lr_limit if i else None,
            "distance": self.distances[-1] if self.distances else None,
            "noise_ball_theory": i.noise_ball if i else None,
            "noise_ball_measured": (sum(d * d for d in half) / len(half)) if half else None,
            "clipped_steps": clipped,               # clipping is not in the theory: --clip off
            "distance_averaged": self.averaged[-1] if self.averaged else None,
        }
