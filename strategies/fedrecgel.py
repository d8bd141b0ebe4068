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
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType
from flwr.serverapp import Grid

from clients.fedrecgel import ITEM_BETA
from fedsim.optim import frequency_weights
from fedsim.node_sums import Sum
from fedsim.protocol import ClientReply
from strategies.fedncf import FedNCF, per_item_mean_of

COUNTS = f"{MessageType.QUERY}.counts"


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

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        if self.eisam and self.item_beta is None:
            self.ask_counts(grid, server_round)
        return super().configure_train(server_round, arrays, config, grid)

    def ask_counts(self, grid: Grid, server_round: int) -> None:
        """The one-off ``query.counts`` round: n_i summed over every client, then beta."""
        asks = self.instructions(COUNTS, server_round, range(self.num_partitions))
        replies = self.collect(self.exchange(grid, asks))
        if not replies:
            raise RuntimeError("query.counts: no valid reply, so no item counts for EISAM")
        counts = np.sum([c.arrays["counts"] for c in replies], axis=0)
        self.item_beta = frequency_weights(counts, self.eisam_alpha,
                                           self.eisam_beta_max).astype(np.float32)

    def client_rows(self, item_ids: np.ndarray) -> dict[str, np.ndarray]:
        rows = super().client_rows(item_ids)
        if self.item_beta is not None:
            rows[ITEM_BETA] = self.item_beta[item_ids]
        return rows

    def check_reply(self, reply: ClientReply) -> str | None:
        """Count replies: a non-negative int64 vector over the catalogue; the rest: FedNCF's."""
        if self._phase != COUNTS:
            return super().check_reply(reply)
        counts, num_items = reply.arrays.get("counts"), len(self.params[self.item_tables[0]])
        if counts is None or counts.dtype != np.int64 or counts.shape != (num_items,):
            return f"counts: expected an int64 array of shape ({num_items},)"
        if counts.min() < 0:
            return "counts: negative values"
        return None

    def mean_gradient(self, total: Sum) -> dict[str, torch.Tensor]:
        if not self.item_centric:
            return super().mean_gradient(total)
        return per_item_mean_of(self.params, total, self.item_tables)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "item_beta": self.item_beta}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.item_beta = state.get("item_beta")
