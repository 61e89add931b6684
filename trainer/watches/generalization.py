"""The validation curve against the training curve: the best validation loss and its step,
the generalization gap, the overfitting alarm, early stopping with the best weights kept
(--early-stop, --restore-best).

Early stopping follows Keras's and Lightning's convention: `patience` validations in a
row without a new best (a strictly lower loss) stop the run. The best weights are a copy
on the model's device, taken at each new best (validations are every --val-every steps,
so the copy is rare); at the end of the run they are put back.
"""

from __future__ import annotations

import math

import torch


class BestWatch:
    def __init__(self, patience: int | None, keep_weights: bool):
        self.patience, self.keep_weights = patience, keep_weights
        self.best_loss: float | None = None
        self.best_step: int | None = None
        self.since_best = 0             # validations since the best
        self.weights: dict | None = None

    def observe(self, step: int, val_loss: float, model: torch.nn.Module) -> bool:
        """A validation at `step`; True when early stopping says stop."""
        if math.isfinite(val_loss) and (self.best_loss is None or val_loss < self.best_loss):
            self.best_loss, self.best_step, self.since_best = val_loss, step, 0
            if self.keep_weights:
                self.weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return False
        self.since_best += 1
        return self.patience is not None and self.since_best >= self.patience

    def restore(self, model: torch.nn.Module) -> bool:
        """Put the best weights back; False when there are none (no validation yet)."""
        if self.weights is None:
            return False
        model.load_state_dict(self.weights)
        return True

    def summary(self, final_train_loss: float | None, final_val_loss: float | None) -> dict:
        gap = (final_val_loss - final_train_loss
               if final_val_loss is not None and final_train_loss is not None else None)
        return {"best_val_loss": self.best_loss, "best_val_step": self.best_step,
                "generalization_gap": gap}


class OverfitWatch:
    """Overfitting: validation loss up while training loss goes down. Said once.

    The rule: `patience` validations in a row at least `rise` (relative) above the best
    validation loss, and at least `floor` of the first validation loss above it (so a loss
    near zero does not alarm on noise of its own size), while the training loss (the mean
    of the recent steps) is below what it was at the best validation. Five in a row, not
    three: a spike of Adam with batch norm (the CNN) holds three validations and falls back.
    """

    def __init__(self, rise: float = 0.10, floor: float = 0.05, patience: int = 5):
        self.rise, self.floor, self.patience = rise, floor, patience
        self.first: float | None = None
        self.best: tuple[float, int, float] | None = None     # (val loss, step, train loss)
        self.above = 0                  # validations in a row above the bar
        self.fired_at: int | None = None

    def bar(self) -> float:
        """How far above the best a validation loss must be to count."""
        return max(self.rise * self.best[0], self.floor * self.first)

    def observe(self, step: int, val_loss: float, train_loss: float | None) -> dict | None:
        """A validation; the alarm's facts (once, the first time the rule holds), else None."""
        if not math.isfinite(val_loss) or train_loss is None or self.fired_at is not None:
            return None
        if self.first is None:
            self.first = val_loss
        if self.best is None or val_loss < self.best[0]:
            self.best, self.above = (val_loss, step, train_loss), 0
            return None
        self.above = self.above + 1 if val_loss - self.best[0] >= self.bar() else 0
        if self.above < self.patience or train_loss >= self.best[2]:
            return None
        self.fired_at = step
        return {"step": step, "val_loss": val_loss, "train_loss": train_loss,
                "best_val_loss": self.best[0], "best_val_step": self.best[1],
                "train_loss_at_best": self.best[2]}
