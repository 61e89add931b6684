"""The validation curve against the training curve: the best validation loss and its step,
the generalization gap, early stopping with the best weights kept (--early-stop,
--restore-best).

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
