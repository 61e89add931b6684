"""Optimization theory on a quadratic whose spectrum is known: rates, step limits, noise ball.

For f(w) = |Xw - y|^2 / 2N with Hessian H (eigenvalues lam_i in [mu, L]), the error
e = w - w* of a full-batch method evolves by a fixed linear map per eigen-direction, so
its asymptotic per-step contraction is that map's spectral radius, maximised over the
spectrum (exact, for any step and momentum):

- gradient descent (``sgd``): e' = (1 - a lam) e                 -> max |1 - a lam|
- heavy ball (``momentum``; torch's SGD momentum, dampening 0, is Polyak's heavy ball):
  e' = (1 + b - a lam) e - b e_prev                             -> roots of z^2 - (1+b-a lam)z + b
- Nesterov (torch's form: v = b v + g; w -= a (g + b v)), with state (e, v_prev):
  [[1 - a lam (1 + b), -a b^2], [lam, b]]

Textbook special cases the tests check: GD at a = 1/L contracts by 1 - 1/kappa; heavy
ball at a = 4/(sqrt L + sqrt mu)^2, b = ((sqrt kappa - 1)/(sqrt kappa + 1))^2 by
(sqrt kappa - 1)/(sqrt kappa + 1) (Polyak 1964). Adaptive methods have no such rate.
"""

from __future__ import annotations

import torch

F64 = torch.float64


def iteration_radius(optimizer: str, lr: float, eigenvalues, momentum: float = 0.0):
    """Per-eigenvalue spectral radius of the full-batch error map, or None (no theory)."""
    lam = torch.as_tensor(eigenvalues, dtype=F64)
    a, b = lr, momentum
    if optimizer == "sgd" or (optimizer in ("momentum", "nesterov") and b == 0):
        return (1 - a * lam).abs()
    if optimizer == "momentum":
        m = torch.stack([torch.stack([1 + b - a * lam, torch.full_like(lam, -b)], -1),
                         torch.stack([torch.ones_like(lam), torch.zeros_like(lam)], -1)], -2)
    elif optimizer == "nesterov":
        m = torch.stack([torch.stack([1 - a * lam * (1 + b), torch.full_like(lam, -a * b * b)], -1),
                         torch.stack([lam, torch.full_like(lam, b)], -1)], -2)
    else:
        return None
    return torch.linalg.eigvals(m).abs().amax(-1)                  # (D,)


def contraction_rate(optimizer: str, lr: float, eigenvalues, momentum: float = 0.0):
    """The asymptotic per-step factor of ||w - w*|| under full-batch steps, or None."""
    radius = iteration_radius(optimizer, lr, eigenvalues, momentum)
    return None if radius is None else float(radius.max())


def lr_limit(optimizer: str, L: float, momentum: float = 0.0) -> float | None:
    """The largest stable step: where the error map at lam = L gets an eigenvalue -1.

    GD 2/L; heavy ball (2 + 2b)/L; Nesterov (2 + 2b)/((1 + 2b) L)."""
    b = momentum if optimizer in ("momentum", "nesterov") else 0.0
    if optimizer == "sgd" or b == 0 and optimizer in ("momentum", "nesterov"):
        return 2 / L
    if optimizer == "momentum":
        return (2 + 2 * b) / L
    if optimizer == "nesterov":
        return (2 + 2 * b) / ((1 + 2 * b) * L)
    return None


def sgd_noise_ball(x: torch.Tensor, residuals: torch.Tensor, lr: float, batch: int,
                   exact_up_to: int = 64) -> float:
    """Stationary E||w - w*||^2 of constant-step SGD on least squares, batches of `batch`
    examples drawn with replacement.

    With e = w - w*, a step is e' = (I - a H_b) e - a g_b, where H_b is the batch's
    Hessian and g_b the batch mean of x_i r_i (r_i = x_i^T w* - y_i, mean zero). Its second
    moment S = E[e e^T] is stationary when (Defossez & Bach 2015, the LMS recursion)

        S = (I - aH) S (I - aH) + (a^2/B) (E[(x^T S x) x x^T] - H S H) + (a^2/B) Sigma,
        Sigma = E[r^2 x x^T],

    a linear equation in S solved here exactly (D^2 unknowns) for D <= `exact_up_to`.
    Above that the fourth-moment term is dropped and it is solved in H's eigenbasis:
    S_ii = (a/B) Sigma_ii / (lam_i (2 - a lam_i)); for Sigma = sigma^2 H that is about
    a sigma^2 D / (2B) for small steps. Returns tr(S).
    """
    x, r = x.to(F64), residuals.to(F64)
    n, d = x.shape
    h = x.T @ x / n
    sigma = (x * (r * r)[:, None]).T @ x / n
    k = lr * lr / batch
    if d <= exact_up_to:
        eye = torch.eye(d * d, dtype=F64)
        a = torch.eye(d, dtype=F64) - lr * h
        z = (x[:, :, None] * x[:, None, :]).reshape(n, d * d)       # vec(x x^T) per example
        fourth = z.T @ z / n                                        # vec(S) -> vec(E[xx^T S xx^T])
        op = eye - torch.kron(a, a) - k * (fourth - torch.kron(h, h))
        s = torch.linalg.solve(op, k * sigma.reshape(-1)).reshape(d, d)
        return float(torch.trace(s))
    lam, v = torch.linalg.eigh(h)
    sigma_ii = torch.einsum("ji,jk,ki->i", v, sigma, v)
    return float((lr / batch * sigma_ii / (lam * (2 - lr * lam))).sum())
