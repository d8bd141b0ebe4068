"""Sharpness-aware minimisation (SAM) as plain functions over tensors and their gradients.

SAM (Foret et al., ICLR 2021) takes the gradient at the worst nearby point
``theta + eps``, ``eps = rho * g / (||g||_2 + 1e-12)``, instead of at ``theta``. The functions
here only compute perturbations and perturbed gradients, so any client can combine them with
its own loss, parameter groups and optimiser (FedRecGEL runs one pass per parameter group from
one shared base gradient):

- group SAM: one joint L2 norm over every tensor of the group (Foret et al.; the FedRecGEL
  authors' choice for both their shared and private groups);
- item-wise SAM for embedding tables: one perturbation per row, each of norm ``rho``, so a
  rarely seen item moves as far as a popular one; rows with zero gradient stay where they are.

With ``rho == 0`` no extra pass runs and the base gradient is returned as is, so a SAM method
reduces *exactly* to its plain counterpart (and saves the forward/backward pass).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch

EPS = 1e-12


def group_perturbation(grads: Sequence[torch.Tensor], rho: float) -> list[torch.Tensor]:
    """``rho * g / (||g|| + 1e-12)`` with the norm taken jointly over all of `grads`."""
    norm = torch.norm(torch.stack([g.norm(p=2) for g in grads]), p=2)
    scale = rho / (norm + EPS)
    return [g * scale for g in grads]


def rowwise_perturbation(grad: torch.Tensor, rho: float) -> torch.Tensor:
    """One perturbation per row of a table's gradient: ``rho * g_i / (||g_i|| + 1e-12)``."""
    norms = grad.norm(p=2, dim=1, keepdim=True)
    return grad * (rho / (norms + EPS))


def perturbation(grads: Sequence[torch.Tensor], rho: float,
                 rowwise: Sequence[bool] | None = None) -> list[torch.Tensor]:
    """SAM perturbation of a parameter group: row-wise for the tensors flagged in `rowwise`,
    one joint group perturbation for the others (their norm excludes the row-wise tensors)."""
    rowwise = rowwise or [False] * len(grads)
    group = [g for g, r in zip(grads, rowwise) if not r]
    group_eps = iter(group_perturbation(group, rho) if group else [])
    return [rowwise_perturbation(g, rho) if r else next(group_eps)
            for g, r in zip(grads, rowwise)]


@contextmanager
def perturbed(params: Sequence[torch.Tensor], eps: Sequence[torch.Tensor]) -> Iterator[None]:
    """Temporarily move `params` by `eps`; the saved originals are restored bit for bit
    (subtracting `eps` again would not be exact in floating point)."""
    saved = [p.detach().clone() for p in params]
    with torch.no_grad():
        for param, step in zip(params, eps):
            param.add_(step)
    try:
        yield
    finally:
        with torch.no_grad():
            for param, original in zip(params, saved):
                param.copy_(original)


def sam_gradient(loss_fn: Callable[[], torch.Tensor], params: Sequence[torch.Tensor],
                 grads: Sequence[torch.Tensor], rho: float,
                 rowwise: Sequence[bool] | None = None) -> list[torch.Tensor]:
    """Gradient of ``loss_fn()`` w.r.t. `params` at ``params + eps(grads)``.

    `grads` is the base gradient at the current point; only `params` are perturbed (any other
    parameter the loss reads stays where it is). ``rho == 0`` returns `grads` unchanged.
    """
    if rho == 0:
        return list(grads)
    with perturbed(params, perturbation(grads, rho, rowwise)):
        return list(torch.autograd.grad(loss_fn(), list(params)))
