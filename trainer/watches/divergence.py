"""Divergence of a loss that stays finite: clipping can keep an exploding run from NaN.

The rule: an exponential moving average of the training loss (weight ``1 - SMOOTHING``
on each new step) stays above ``factor`` times the initial loss for ``patience``
steps in a row. The initial loss is the first finite one: an untrained model's
loss, which ordinary training, however noisy, does not climb to ten times of.
"""

from __future__ import annotations

import math

SMOOTHING = 0.9         # EMA decay: about the last ten steps


class BlowUpWatch:
    """Watches the training loss for a finite blow-up (``--diverge-factor``, ``--diverge-steps``)."""

    def __init__(self, factor: float | None, patience: int):
        self.factor, self.patience = factor, patience
        self.initial: float | None = None
        self.smoothed: float | None = None
        self.over = 0                       # steps in a row above the threshold

    @property
    def threshold(self) -> float | None:
        if self.factor is None or self.initial is None or self.initial <= 0:
            return None
        return self.factor * self.initial

    @property
    def rising(self) -> bool:
        """Above the threshold right now: not a state worth keeping as the last good one."""
        limit = self.threshold
        return limit is not None and self.smoothed is not None and self.smoothed > limit

    def observe(self, step: int, loss: float, lr: float) -> str | None:
        """Take one step's loss; once it has been too high for long enough, say so (once per
        ``patience`` steps over, naming the step, the loss and the lr)."""
        if not math.isfinite(loss):
            return None                     # non-finite steps have their own rule (--skip-limit)
        if self.initial is None:
            self.initial = loss
        self.smoothed = loss if self.smoothed is None else \
            SMOOTHING * self.smoothed + (1 - SMOOTHING) * loss
        self.over = self.over + 1 if self.rising else 0
        if self.over < self.patience:
            return None
        self.over = 0
        return (f"loss {loss:.4g} at step {step} (lr {lr:g}): its moving average "
                f"{self.smoothed:.4g} stayed over {self.factor:g}x the initial loss "
                f"{self.initial:.4g} for {self.patience} steps in a row")

    def reset(self) -> None:
        """After a rewind: the weights are the old good ones, so the average starts again."""
        self.smoothed, self.over = None, 0
