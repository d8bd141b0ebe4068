"""FairFed client (Ezzeldin et al., AAAI 2023, https://arxiv.org/abs/2110.00857).

FairFed changes only the server's aggregation weights (:mod:`strategies.fairfed`); clients train
locally exactly as in FedAvg. Before training, each client also measures the global model it
received on its own training rows and adds the confusion counts per sensitive group to its reply
(array "fairness_counts", int64 [groups, classes, classes]): the server derives the local
fairness metric F_k from them, and the global F_global from their sum. The paper's optional
local debiasing (client-side reweighing) is not used: the brief's FairFed is FedAvg clients
with fairness-aware aggregation.
"""

from __future__ import annotations

import numpy as np

from clients.fedavg import FedAvgClient
from fedsim.messages.fairfed import FAIRNESS_COUNTS


class FairFedClient(FedAvgClient):
    """FedAvg's local training plus the received model's group confusion counts."""

    def train(self, shared: dict[str, np.ndarray], own: dict[str, np.ndarray], state,
              server_round: int) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        self._load(shared)
        counts = self.confusion(self.x, self.y, self.s)  # of θ^t, before the local steps
        weights, metrics = super().train(shared, own, state, server_round)
        return {**weights, FAIRNESS_COUNTS: counts}, metrics
