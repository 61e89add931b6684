"""The gradient noise scale (McCandlish et al. 2018, "An Empirical Model of Large-Batch
Training", appendix A): how large a batch still pays.

B_simple = tr(Sigma) / |G|^2, with G the true gradient and Sigma the per-example gradient
covariance. Training at batch B takes about S_min (1 + B_noise / B) steps and
E_min (1 + B / B_noise) examples (their eqs. 2.11-2.12, B_simple standing in for B_noise):
well below B_simple a larger batch (or more data-parallel workers) cuts the steps almost
in proportion; well above it the extra examples buy little.

Two estimators feed ``NoiseScale``: with several ranks, each rank's local gradient against
the all-reduced one (trainer/parallel/ddp.py); in one process, ``chunk_norms``: the gradients
of equal parts of one batch against their mean (trainer/watches/noise.py). Only ``chunk_norms``
imports torch, so the dashboard and the reports can use the rest (the UI process has no torch).
"""

from __future__ import annotations

import math


class NoiseScale:
    """B_simple from pairs of squared gradient norms at two batch sizes, smoothed.

    With |g_b|^2 the squared norm of a gradient averaged over b examples,
    E|g_b|^2 = |G|^2 + tr(Sigma) / b, so two batch sizes give unbiased estimates:
    |G|^2 = (B_big |g_big|^2 - B_small |g_small|^2) / (B_big - B_small) and
    tr(Sigma) = (|g_small|^2 - |g_big|^2) / (1 / B_small - 1 / B_big). Each estimate is
    noisy, so both are smoothed (EMA) before their ratio is taken.
    """

    def __init__(self, decay: float = 0.9):
        self.decay = decay
        self.g2: float | None = None
        self.trace: float | None = None

    def update(self, small_sq: float, big_sq: float, b_small: int, b_big: int) -> float | None:
        """Feed one sampled step (mean squared norm at b_small, squared norm at b_big);
        return B_simple, or None until it is defined (a non-positive |G|^2 estimate)."""
        if b_big <= b_small or not (math.isfinite(small_sq) and math.isfinite(big_sq)):
            return self.value
        g2 = (b_big * big_sq - b_small * small_sq) / (b_big - b_small)
        trace = (small_sq - big_sq) / (1 / b_small - 1 / b_big)
        ema = lambda old, new: new if old is None else self.decay * old + (1 - self.decay) * new  # noqa: E731
        self.g2, self.trace = ema(self.g2, g2), ema(self.trace, trace)
        return self.value

    @property
    def value(self) -> float | None:
        if self.g2 is None or self.g2 <= 0 or self.trace <= 0:
            return None                     # early on, the noisy estimates can go negative
        return self.trace / self.g2


def parts_for(batch: int) -> int:
    """Equal parts one batch is cut into: 4 where each gets at least 2 examples, else 2.
    More parts put the two batch sizes further apart, which steadies both estimates."""
    return 4 if batch >= 8 else 2


def chunk_norms(loss_of, params: list, x, y, parts: int) -> tuple[float, float, int, int]:
    """The gradients of `parts` equal slices of (x, y), each alone and averaged together.

    Returns (mean |g_small|^2 over the slices, |g_big|^2 of their mean, b_small, b_big):
    the two batch sizes ``NoiseScale.update`` takes. A remainder of the batch that does
    not divide evenly is left out, so every slice has exactly b_small examples. The
    parameters' .grad is not touched (torch.autograd.grad); one read back at the end.
    """
    import torch  # here, not at the top: see the module's docstring
    b_small = x.shape[0] // parts
    if b_small < 1:
        raise ValueError(f"a batch of {x.shape[0]} cannot be cut into {parts} parts")
    small_sq = torch.zeros((), dtype=torch.float64, device=x.device)
    total = None
    for i in range(parts):
        part = slice(i * b_small, (i + 1) * b_small)
        grads = torch.autograd.grad(loss_of(x[part], y[part]), params, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
        small_sq += sum(g.double().pow(2).sum() for g in grads)
        total = grads if total is None else torch._foreach_add(total, grads)
    big_sq = sum(g.double().pow(2).sum() for g in total) / parts ** 2
    small, big = torch.stack([small_sq / parts, big_sq]).tolist()
    return small, big, b_small, b_small * parts


def batch_tradeoff(noise_scale: float, batch: int) -> tuple[float, float]:
    """(steps / S_min, examples / E_min) at this batch: 1 + B_noise/B and 1 + B/B_noise."""
    return 1 + noise_scale / batch, 1 + batch / noise_scale
