"""Sharpness: the top eigenvalue of the loss Hessian, by power iteration on Hessian-vector
products, and the step-size limit it is measured against (the edge of stability).

A Hessian-vector product is a second backward through the gradient (double backward),
never the Hessian itself. CPU's flash attention kernel has no double backward, so the
products run under ``sdpa_kernel(SDPBackend.MATH)``. For Adam the sharpness that meets
the limit is the preconditioned one, the top eigenvalue of P^-1/2 H P^-1/2 with Adam's
P = diag(sqrt(v_hat) + eps) (Cohen et al. 2022); for SGD and heavy ball it is H's own
(Cohen et al. 2021).
"""

from __future__ import annotations

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel


def threshold(optimizer: str, lr: float, momentum: float | None = None,
              beta1: float | None = None) -> float | None:
    """Where full-batch training stops being stable on a quadratic of that sharpness:
    2/lr for gradient descent, (2 + 2b)/lr for heavy ball, (2 + 2 beta1)/((1 - beta1) lr)
    for Adam's preconditioned sharpness; None where no such limit is known."""
    if optimizer == "sgd":
        return 2 / lr
    if optimizer == "momentum":
        return (2 + 2 * (momentum or 0.0)) / lr
    if optimizer in ("adam", "adamw") and beta1 is not None:
        return (2 + 2 * beta1) / ((1 - beta1) * lr)
    return None


def adam_preconditioner(optimizer, params: list[torch.Tensor],
                        eps: float = 1e-8) -> list[torch.Tensor] | None:
    """P^-1/2 per parameter from Adam's state: 1/sqrt(sqrt(v_hat) + eps); None before its first
    step."""
    group = optimizer.param_groups[0]
    beta2 = group["betas"][1]
    out = []
    for p in params:
        state = optimizer.state.get(p)
        if not state or "exp_avg_sq" not in state:
            return None
        v_hat = state["exp_avg_sq"] / (1 - beta2 ** float(state["step"]))
        out.append((v_hat.sqrt() + group.get("eps", eps)).rsqrt())
    return out


def top_eigenvalue(loss_fn, params: list[torch.Tensor], iters: int = 100, tol: float = 1e-5,
                   precondition: list[torch.Tensor] | None = None,
                   generator: torch.Generator | None = None) -> tuple[float, int]:
    """(Rayleigh quotient of the dominant eigenvector, iterations) of H, or of
    P^-1/2 H P^-1/2 when `precondition` gives P^-1/2 per parameter."""
    with sdpa_kernel(SDPBackend.MATH):
        grads = torch.autograd.grad(loss_fn(), params, create_graph=True)
        v = [torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device)
             for p in params]
        value = 0.0
        for i in range(1, iters + 1):
            norm = torch.sqrt(sum((u * u).sum() for u in v))
            v = [u / norm for u in v]
            w = v if precondition is None else [u * s for u, s in zip(v, precondition)]
            hv = torch.autograd.grad(grads, params, grad_outputs=w, retain_graph=True)
            if precondition is not None:
                hv = [h * s for h, s in zip(hv, precondition)]
            new = float(sum((a * b).sum() for a, b in zip(v, hv)))
            if i > 1 and abs(new - value) <= tol * abs(new):
                return new, i
            value, v = new, [h.detach() for h in hv]
        return value, iters
