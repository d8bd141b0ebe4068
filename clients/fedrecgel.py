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
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Mapping

import torch

from clients.fedncf import FedNCFClient
from fedsim.models import Recommender
from fedsim.optim import sam_gradient


class FedRecGELClient(FedNCFClient):
    def __init__(self, spec: Mapping[str, Any], partition_id: int):
        super().__init__(spec, partition_id)
        self.rho_sh = spec["fedrecgel.rho_sh"]
        self.rho_ns = spec["fedrecgel.rho_ns"]
        self.item_centric = spec["fedrecgel.item_centric"]

    def gradients(self, model: Recommender, loss_fn: Callable[[], torch.Tensor]
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Base gradient, then one SAM pass per group: shared (uploaded) and private."""
        loss, base = super().gradients(model, loss_fn)
        params = dict(model.named_parameters())
        shared, private = self.backbone.split(base)
        rowwise = [self.item_centric and name in self.backbone.ITEM_TABLES for name in shared]
        grads = {}
        for group, rho, flags in ((shared, self.rho_sh, rowwise), (private, self.rho_ns, None)):
            names = list(group)
            sam = sam_gradient(loss_fn, [params[n] for n in names], [group[n] for n in names],
                               rho, flags)
            grads.update(zip(names, sam))
        return loss, grads
