"""FedRecGEL client: FedNCF's round with the authors' "dual" SAM (fedrecgel.md §1.4).

From one base gradient g on this round's sample (the same negatives for every pass):
- shared pass: ``g~_sh`` = gradient of the shared group (touched item rows, MLP tower, head) at
  ``theta_sh + rho_sh * g_sh / ||g_sh||`` with the user embeddings unperturbed; it is uploaded;
- private pass: ``g~_ns`` = gradient of the user embeddings at
  ``theta_u + rho_ns * g_ns / ||g_ns||`` with the shared group unperturbed; the persistent client
  Adam steps on it.
Norms are joint over each group (plain SAM, as the authors). Sampling, loss, private Adam,
upload and evaluation are FedNCF's (:class:`clients.fedncf.FedNCFClient`); only the gradients
differ, and with both radii 0 the passes are skipped, so the run is FedNCF's bit for bit.

Item-centric mode (``fedrecgel.item_centric``, our extension): each item row gets its own SAM
perturbation of norm ``rho_sh`` (the dense layers keep one group perturbation), so an item seen
by few clients is tested for flatness as hard as a popular one; the server side of the mode is
in :mod:`strategies.fedrecgel`.

EISAM mode (``fedrecgel.eisam``, our extension; EISAM's E1, :mod:`fedsim.optim.eisam`): the
shared perturbation follows the gradient ``g_beta`` of the loss in which every sample is
weighted by ``beta`` of its block's positive item (the positive and its negatives play the part
of a softmax sample with that target), and the upload is ``g + g~_beta - g_beta`` with ``g~_beta``
the weighted gradient at the perturbed point. ``beta`` comes from the server with the item rows
("item_beta", one weight per row), computed from the item counts every client reports once
(:meth:`FedRecGELClient.item_counts`). The private pass is unchanged. With all ``beta = 1`` this is
the shared SAM pass again (up to rounding); it costs one more forward/backward pass. EISAM
clients run one by one, not in cohort mode (:meth:`FedRecGELClient.batched_gradients` does not
weight samples).

Cohort mode (:mod:`clients.cohort`): FedNCF's batched round
(:meth:`clients.fedncf.FedNCFClient.train_batch`) with this class's
:meth:`~FedRecGELClient.batched_gradients`, the twin of :meth:`~FedRecGELClient.gradients`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Mapping

import numpy as np
import torch
from torch.func import grad, grad_and_value

from clients.fedncf import Arrays, FedNCFClient
from fedsim.messages.common import COUNT_TABLE
from fedsim.messages.fedncf import ITEM_IDS
from fedsim.messages.fedrecgel import ITEM_BETA
from fedsim.models import Recommender
from fedsim.optim import perturbation, sam_gradient, weighted_sam_gradient


class FedRecGELClient(FedNCFClient):
    def __init__(self, spec: Mapping[str, Any], partition_id: int):
        super().__init__(spec, partition_id)
        self.rho_sh = spec["fedrecgel.rho_sh"]
        self.rho_ns = spec["fedrecgel.rho_ns"]
        self.item_centric = spec["fedrecgel.item_centric"]
        self.eisam = spec["fedrecgel.eisam"]
        self._sample_weights: torch.Tensor | None = None  # EISAM: of the round being trained

    def batchable(self, shared: Arrays, training: bool) -> bool:
        """FedNCF's batched round with :meth:`batched_gradients`, except in EISAM mode, whose
        sample weights the batched gradients do not take."""
        return not self.eisam and super().batchable(shared, training)

    def item_counts(self) -> np.ndarray:
        """The training interactions of this client's users per item, int64 [num_items]."""
        items = np.concatenate([self.data.user_items(int(u)) for u in self.users])
        return np.bincount(items, minlength=self.data.num_items).astype(np.int64)

    def query_counts(self, shared: Arrays, own: Arrays, state, server_round: int
                     ) -> tuple[Arrays, dict[str, float]]:
        """The reply to the server's one-off ``query.counts`` (EISAM mode): its item counts."""
        return {COUNT_TABLE: self.item_counts()}, {}

    def sample_weights(self, item_ids: np.ndarray, beta: np.ndarray, server_round: int
                       ) -> np.ndarray:
        """EISAM weight of every sample of the round: ``beta`` of its block's positive item.

        The round sample is blocks of one positive followed by its ``train_negatives``
        negatives; `beta` holds one weight per row of `item_ids` (the rows received).
        """
        _, items, _ = self.round_sample(server_round)
        positives = items[::self.negatives + 1]
        return np.repeat(beta[np.searchsorted(item_ids, positives)], self.negatives + 1)

    def train(self, shared, own, state, server_round: int):
        """FedNCF's round; in EISAM mode, first the round's sample weights from "item_beta"."""
        if self.eisam:
            weights = self.sample_weights(own[ITEM_IDS], own[ITEM_BETA], server_round)
            self._sample_weights = torch.from_numpy(weights.astype(np.float32))
            own = {k: v for k, v in own.items() if k != ITEM_BETA}
        try:
            return super().train(shared, own, state, server_round)
        finally:
            self._sample_weights = None

    def gradients(self, model: Recommender, loss_fn: Callable[..., torch.Tensor]
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Base gradient, then one SAM pass per group: shared (uploaded) and private; in EISAM
        mode the shared pass is E1 with the round's sample weights."""
        loss, base = super().gradients(model, loss_fn)
        params = dict(model.named_parameters())
        shared, private = self.backbone.split(base)
        rowwise = [self.item_centric and name in self.backbone.ITEM_TABLES for name in shared]
        grads = {}
        for group, rho, flags in ((shared, self.rho_sh, rowwise), (private, self.rho_ns, None)):
            names = list(group)
            tensors, base_grads = [params[n] for n in names], [group[n] for n in names]
            if group is shared and self._sample_weights is not None:
                weights = self._sample_weights
                sam = weighted_sam_gradient(lambda: loss_fn(weights), tensors, base_grads, rho,
                                            rowwise=flags)
            else:
                sam = sam_gradient(loss_fn, tensors, base_grads, rho, flags)
            grads.update(zip(names, sam))
        return loss, grads

    def batched_gradients(self, loss: Callable[[dict[str, torch.Tensor]], torch.Tensor],
                          params: dict[str, torch.Tensor]
                          ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """:meth:`gradients` as a pure function of one client's parameters, for ``vmap``: base
        gradient, then a SAM pass per group from it (skipped at radius 0), norms per client.
        Each pass differentiates only its group, so the user-row pass skips the per-client
        gradients of the dense layers."""
        grads, value = grad_and_value(loss)(params)
        base = dict(grads)
        shared = [n for n in params if n.startswith(self.backbone.SHARED_PREFIXES)]
        for rho, names in ((self.rho_sh, shared), (self.rho_ns, list(self.backbone.USER_TABLES))):
            if rho == 0:
                continue
            flags = [self.item_centric and n in self.backbone.ITEM_TABLES for n in names]
            eps = perturbation([base[n] for n in names], rho, flags)
            moved = {n: params[n] + e for n, e in zip(names, eps)}
            rest = {n: v for n, v in params.items() if n not in moved}
            grads.update(grad(lambda group: loss({**rest, **group}))(moved))
        return value, grads
