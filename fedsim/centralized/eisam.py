"""EISAM on SASRec (method ``eisam``): item-wise sharpness-aware training for the long tail.

Zhang et al., "Taming the Long Tail: Efficient Item-wise Sharpness-Aware Minimization for
LLM-based Recommender Systems", arXiv 2603.12752. Only the abstract was available; this is the
reconstruction of ../shared/research/centralized.md §(b) on a small ID-based SASRec instead of
an LLM (:mod:`fedsim.optim.eisam` holds the optimizer pieces):

- ``eisam.mode = "e1"``: per batch, the shared perturbation along the beta-weighted loss's
  gradient, and the step on ``grad L + grad L_beta(theta + eps) - grad L_beta(theta)`` (two
  forward/backward passes). Both passes see the same dropout masks, so the difference between
  them is the perturbation alone, and the torch generator ends where a plain step leaves it;
- ``eisam.mode = "e2"``: the closed-form penalty on the item rows (the tied output table) added
  to the cross-entropy (one pass).

beta = :func:`fedsim.optim.frequency_weights` of the training counts of this client's users
(all users with the ``single`` partitioner), ``eisam.alpha`` and ``eisam.beta_max``. With
``eisam.rho = 0`` a step is :class:`~fedsim.centralized.sasrec.SASRecTrainer`'s, bit for bit.
The reported train loss is the plain cross-entropy in every mode.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from fedsim.centralized.sasrec import SASRecTrainer
from fedsim.data import Interactions
from fedsim.models.sasrec import SASRec
from fedsim.optim import frequency_weights, item_row_penalty, weighted_sam_gradient


class EISAMTrainer(SASRecTrainer):
    """SASRec whose batch step adds EISAM's item-wise sharpness (``eisam.*`` keys)."""

    def __init__(self, spec: Mapping[str, Any], data: Interactions, users: np.ndarray):
        super().__init__(spec, data, users)
        self.mode, self.rho = spec["eisam.mode"], spec["eisam.rho"]
        items = np.concatenate([data.user_items(int(u)) for u in users])
        counts = np.bincount(items, minlength=data.num_items)
        self.beta = torch.from_numpy(
            frequency_weights(counts, spec["eisam.alpha"], spec["eisam.beta_max"])).float()

    def step(self, model: SASRec, optimizer: torch.optim.Adam, inputs: torch.Tensor,
             targets: torch.Tensor) -> float:
        if self.rho == 0:
            return super().step(model, optimizer, inputs, targets)
        dropout_state = torch.get_rng_state()

        def sample_losses():  # the same dropout masks at every point of the step
            torch.set_rng_state(dropout_state)
            return self.sample_losses(model, inputs, targets)

        losses, hidden, items = sample_losses()
        loss = losses.mean()
        optimizer.zero_grad()
        if self.mode == "e2":
            # p_s(y_s) = exp(-CE_s).
            penalty = item_row_penalty(hidden, torch.exp(-losses), items, self.beta, self.rho)
            (loss + penalty).backward()
        else:
            params = list(model.parameters())
            beta = self.beta[items]
            grads = torch.autograd.grad(loss, params, retain_graph=True)
            weighted_grads = torch.autograd.grad((beta * losses).mean(), params)
            total = weighted_sam_gradient(lambda: (beta * sample_losses()[0]).mean(), params,
                                          grads, self.rho, weighted_grads)
            for param, grad in zip(params, total):
                param.grad = grad
        optimizer.step()
        return float(loss.detach())
