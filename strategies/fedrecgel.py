"""FedRecGEL strategy: FedNCF's server (FedSGD + server Adam), optionally item-centric.

Faithful mode is FedNCF's server unchanged: the authors' SAM lives on the clients
(:mod:`clients.fedrecgel`) and the server averages the uploaded SAM gradients over all replies.

Item-centric mode (``item_centric=True``, our improvement on the paper's item-centred framing,
not in the authors' code): each item row is averaged over the clients that touched that item
(:func:`strategies.fedncf.per_item_mean_gradient`), so an item's update does not shrink with the
share of sampled clients that happened to see it; dense layers are still averaged over all
replies. Messages are FedNCF's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from strategies.fedncf import FedNCF, per_item_mean_gradient


class FedRecGEL(FedNCF):
    """:class:`~strategies.fedncf.FedNCF` with an optional per-item mean of item rows.

    Parameters
    ----------
    item_centric : bool (default: False)
        Average item rows over the clients that touched each item instead of over all replies.
    **kwargs
        Those of :class:`~strategies.fedncf.FedNCF`.
    """

    def __init__(self, *, item_centric: bool = False, **kwargs: Any):
        super().__init__(**kwargs)
        self.item_centric = item_centric

    def mean_gradient(self, uploads: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
        if not self.item_centric:
            return super().mean_gradient(uploads)
        return per_item_mean_gradient(self.params, uploads, self.item_tables)
