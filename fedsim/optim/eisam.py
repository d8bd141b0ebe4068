"""Item-wise sharpness-aware minimisation for the long tail (EISAM, Zhang et al., arXiv 2603.12752).

Only the paper's abstract was available; the pieces below are the reconstruction of
../shared/research/centralized.md §(b), tagged [R] there. With ``pi_i`` the share of item i
among the training targets and ``beta_i`` a weight that decreases with the item's frequency,
the objective is ``sum_i pi_i L_i(theta) + sum_i pi_i beta_i [max_{|eps|<=rho} L_i(theta + eps)
- L_i(theta)]``: the flatness of rare items' losses counts more. Two tractable forms:

- E1, :func:`weighted_sam_gradient`: one perturbation shared by all items, taken along the
  gradient of the beta-weighted loss (so tail items dominate its direction), and the gradient of
  ``L + L_beta(theta + eps) - L_beta(theta)``: SAM's cost (one extra forward/backward), and with
  every ``beta = 1`` it is SAM's gradient again. The perturbation and the perturbed pass are
  :mod:`fedsim.optim.sam`'s.
- E2, :func:`item_row_penalty`: the first-order item sharpness ``rho * ||dL_i/dw_i||`` on each
  item's own output row ``w_i``, whose gradient has the closed form
  ``mean_{s: y_s = i} (p_s(i) - 1) h_s`` for softmax cross-entropy; added to the loss, no extra
  backward pass.

:func:`frequency_weights` gives ``beta`` from training counts. ``rho == 0`` leaves the plain
gradient (E1) and adds nothing (E2), exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from fedsim.optim.sam import sam_gradient


def frequency_weights(counts: np.ndarray, alpha: float, beta_max: float) -> np.ndarray:
    """``beta_i = min(beta_max, (mean_n / n_i) ** alpha)``, divided by its mean.

    The mean (both ``mean_n`` and the normalisation) is over the items with ``n_i > 0``: only they
    are training targets, so their weights have mean 1 and ``alpha = 0`` gives all ones. Items
    never seen in training get the cap (their weight is never used in training). float64
    [num_items].
    """
    counts = np.asarray(counts, dtype=np.float64)
    seen = counts > 0
    if not seen.any():
        raise ValueError("frequency_weights: every count is 0; expected some training item")
    with np.errstate(divide="ignore"):
        raw = np.minimum(beta_max, (counts[seen].mean() / counts) ** alpha)
    return raw / raw[seen].mean()


def weighted_sam_gradient(weighted_loss_fn: Callable[[], torch.Tensor],
                          params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor],
                          rho: float, weighted_grads: Sequence[torch.Tensor] | None = None,
                          rowwise: Sequence[bool] | None = None) -> list[torch.Tensor]:
    """E1: ``grads + grad L_beta(theta + eps) - grad L_beta(theta)``, ``eps = rho * grad
    L_beta / ||grad L_beta||`` (joint norm; row-wise for tensors flagged in `rowwise`).

    `grads` is the plain loss's gradient at the current point, `weighted_loss_fn()` recomputes
    the beta-weighted loss on the same sample, and `weighted_grads` is its gradient at the
    current point if the caller has it from a shared forward pass (else one more pass computes
    it). Only `params` are perturbed. ``rho == 0`` returns `grads` unchanged, with no pass.
    """
    if rho == 0:
        return list(grads)
    if weighted_grads is None:
        weighted_grads = torch.autograd.grad(weighted_loss_fn(), list(params))
    perturbed = sam_gradient(weighted_loss_fn, params, weighted_grads, rho, rowwise)
    return [g + gp - gw for g, gp, gw in zip(grads, perturbed, weighted_grads)]


def item_row_penalty(hidden: torch.Tensor, target_probs: torch.Tensor, targets: torch.Tensor,
                     weights: torch.Tensor, rho: float) -> torch.Tensor:
    """E2: ``rho * sum_i pi_i beta_i ||dL_i/dw_i||`` over the items i targeted in the batch.

    For softmax cross-entropy with logits ``h_s . w_j``, ``dl_s/dw_{y_s} = (p_s(y_s) - 1) h_s``,
    so with ``L_i`` the mean loss of the batch's samples of item i and ``pi_i`` their share of
    the batch, ``pi_i ||dL_i/dw_i|| = ||sum_{s: y_s = i} (p_s(i) - 1) h_s|| / |B|``.
    Differentiable through the probabilities and the hidden states. `hidden` ``[n, d]``,
    `target_probs` ``p_s(y_s)`` ``[n]``, `targets` item ids ``[n]``, `weights` beta per item.
    """
    items, slot = torch.unique(targets, return_inverse=True)
    per_sample = (target_probs - 1).unsqueeze(1) * hidden
    per_item = hidden.new_zeros(len(items), hidden.shape[1]).index_add(0, slot, per_sample)
    return rho * (weights[items] * per_item.norm(dim=1)).sum() / len(targets)
