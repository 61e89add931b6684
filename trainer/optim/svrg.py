"""SVRG (Johnson & Zhang 2013): stochastic steps whose noise vanishes at the optimum.

Every m steps (``--svrg-every``) the weights are copied to a snapshot w~ and the full
gradient mu = grad f(w~) is taken once. Each step then follows

    g = grad f_B(w) - grad f_B(w~) + mu

(an unbiased gradient whose variance goes to zero as w and w~ approach w*), with a
plain SGD update. On ``--model linear`` mu is exact: f over the whole set. On the
neural-net tasks there is no "whole set" to sweep cheaply, so mu is the gradient on a
large fixed batch (16 x --batch-size, drawn once per snapshot); that is an estimate and
the variance reduction stops at its accuracy. It costs a second forward and backward
per step (the snapshot's gradient on the same batch), which the FLOP count, taken on
the main model, does not include.
"""

from __future__ import annotations

import copy

import torch

BIG_BATCH = 16                  # x --batch-size: the full-gradient estimate on neural nets


class SVRG:
    def __init__(self, model: torch.nn.Module, task, batch_size: int, every: int, seed: int):
        self.snapshot = copy.deepcopy(model)
        self.task, self.batch_size, self.every = task, batch_size, every
        device = next(model.parameters()).device      # batches are drawn where they are used
        self.gen = torch.Generator(device if device.type == "cuda" else "cpu").manual_seed(seed + 7)
        self.full: list[torch.Tensor] | None = None
        self.refreshed_at = -1

    def _gradient(self, x, y, autocast) -> list[torch.Tensor]:
        params = list(self.snapshot.parameters())
        with autocast():
            loss = self.task.loss(self.snapshot(x), y)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]

    def refresh(self, model: torch.nn.Module, step: int, autocast) -> None:
        """w~ = w, and mu = the full gradient there (exact on linear, a big batch otherwise)."""
        self.snapshot.load_state_dict(model.state_dict())
        if hasattr(self.task, "w_star"):                    # least squares: every example
            x, y = self.task.batch("val", self.batch_size, self.gen)
        else:
            x, y = self.task.batch("train", BIG_BATCH * self.batch_size, self.gen)
        self.full = self._gradient(x, y, autocast)
        self.refreshed_at = step

    def correct(self, model: torch.nn.Module, step: int, x, y, autocast) -> None:
        """Turn the minibatch gradient in ``p.grad`` into SVRG's: add mu - grad f_B(w~)."""
        if self.full is None or step - self.refreshed_at >= self.every:
            self.refresh(model, step, autocast)
        for p in model.parameters():
            if p.grad is None:                              # unused this step: zero gradient
                p.grad = torch.zeros_like(p)
        grads = [p.grad for p in model.parameters()]
        torch._foreach_add_(grads, torch._foreach_sub(self.full, self._gradient(x, y, autocast)))
