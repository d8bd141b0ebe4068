"""FedRecGEL strategy: FedNCF's server (FedSGD + server Adam), optionally item-centric.

Faithful mode is FedNCF's server unchanged: the authors' SAM lives on the clients
(:mod:`clients.fedrecgel`) and the server averages the uploaded SAM gradients over all replies.

Item-centric mode (``item_centric=True``, our improvement on the paper's item-centred framing,
not in the authors' code): each item row is averaged over the clients that touched that item
(:func:`strategies.fedncf.per_item_mean_of`), so an item's update does not shrink with the
share of sampled clients that happened to see it; dense layers are still averaged over all
replies. Messages are FedNCF's.

EISAM mode (``eisam=True``, our extension, :mod:`clients.fedrecgel`): before the first training
round the server asks every client once (``query.counts``; each replies "counts", int64
[num_items], its users' training interactions per item), sums them into the item frequencies
n_i and keeps ``beta = frequency_weights(n, alpha, beta_max)``
(:func:`fedsim.optim.frequency_weights`). Every training message then carries, per client,
"item_beta" (float32 [n]) beside the item rows it asked for. What this reveals: to the server,
each client's item counts, which for a one-user client are exactly its training items (the
item-sparse protocol shows them only mixed with fresh negatives); secure aggregation of the
counts (the server needs only the sum) would hide them, and is not simulated here. To every
client, the weights of the rows it receives, i.e. how popular those items are.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid

from fedsim.messages.common import COUNT_TABLE, COUNTS
from fedsim.messages.fedrecgel import ITEM_BETA
from fedsim.node_sums import Sum
from fedsim.optim import frequency_weights
from strategies.fedncf import FedNCF, per_item_mean_of


class FedRecGEL(FedNCF):
    """:class:`~strategies.fedncf.FedNCF` with an optional per-item mean of item rows.

    Parameters
    ----------
    item_centric : bool (default: False)
        Average item rows over the clients that touched each item instead of over all replies.
    eisam : bool (default: False)
        Ask the clients' item counts once and send each client the EISAM weights of its rows.
    eisam_alpha, eisam_beta_max : float (default: 1.0, 10.0)
        The weight function's exponent and cap (:func:`fedsim.optim.frequency_weights`).
    **kwargs
        Those of :class:`~strategies.fedncf.FedNCF`.
    """

    def __init__(self, *, item_centric: bool = False, eisam: bool = False,
                 eisam_alpha: float = 1.0, eisam_beta_max: float = 10.0, **kwargs: Any):
        super().__init__(**kwargs)
        self.item_centric = item_centric
        self.eisam = eisam
        self.eisam_alpha, self.eisam_beta_max = eisam_alpha, eisam_beta_max
        self.item_beta: np.ndarray | None = None  # float32 [num_items], once the counts are in

    def client_settings(self) -> dict[str, Any]:
        return {**super().client_settings(), "fedrecgel.item_centric": self.item_centric,
                "fedrecgel.eisam": self.eisam}

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        if self.eisam and self.item_beta is None:
            self.ask_counts(grid, server_round)
        return super().configure_train(server_round, arrays, config, grid)

    def ask_counts(self, grid: Grid, server_round: int) -> None:
        """The one-off ``query.counts`` round: n_i summed over every client, then beta."""
        num_items = len(self.params[self.item_tables[0]])
        counts = self.ask_every_client(grid, server_round, COUNTS, [COUNT_TABLE],
                                       counts=[COUNT_TABLE], shape=(num_items,))[COUNT_TABLE]
        self.item_beta = frequency_weights(counts, self.eisam_alpha,
                                           self.eisam_beta_max).astype(np.float32)

    def client_rows(self, item_ids: np.ndarray) -> dict[str, np.ndarray]:
        rows = super().client_rows(item_ids)
        if self.item_beta is not None:
            rows[ITEM_BETA] = self.item_beta[item_ids]
        return rows

    def mean_gradient(self, total: Sum) -> dict[str, torch.Tensor]:
        if not self.item_centric:
            return super().mean_gradient(total)
        return per_item_mean_of(self.params, total, self.item_tables)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "item_beta": self.item_beta}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.item_beta = state.get("item_beta")
