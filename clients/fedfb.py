"""FedFB client (Zeng, Chen, Lee 2021, https://arxiv.org/abs/2110.15545): FairBatch-weighted FedAvg.

Two messages (the server side and the update rule: :mod:`strategies.fedfb`):
- ``query.group_losses``: with the global model in the shared arrays, reply "counts" int64
  [groups, classes] (training rows per sensitive group and label) and "losses" float64
  [groups, classes] (the sum of the model's cross entropy over those rows);
- train: the shared arrays hold the model and "fedfb.weights" [groups, classes]; FedAvg's local
  training scales row i's loss by weights[a_i, y_i], and the reply's metric "weight-sum"
  (Σ_i weights[a_i, y_i]) is the client's aggregation weight, as in the authors' code, which
  weights each client's model by its total sample weight.
"""

from __future__ import annotations

import numpy as np
import torch

from clients.fedavg import FedAvgClient
from fedsim.messages.common import COUNT_TABLE
from fedsim.messages.fedfb import LOSS_TABLE, WEIGHT_SUM, WEIGHTS


class FedFBClient(FedAvgClient):
    """FedAvg's local training with per-(group, label) loss weights from the server."""

    def query_group_losses(self, shared: dict[str, np.ndarray], own, state, server_round: int
                           ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """Rows and summed cross entropy of the global model per (group, label) cell."""
        self._load(shared)
        with torch.no_grad():
            loss = torch.nn.functional.cross_entropy(
                self.model(torch.from_numpy(self.x)), torch.from_numpy(self.y),
                reduction="none").double().numpy()
        cells = (self.s, self.y)
        counts = np.zeros((self.num_groups, self.num_classes), np.int64)
        losses = np.zeros((self.num_groups, self.num_classes))
        np.add.at(counts, cells, 1)
        np.add.at(losses, cells, loss)
        return {COUNT_TABLE: counts, LOSS_TABLE: losses}, {}

    def train(self, shared: dict[str, np.ndarray], own: dict[str, np.ndarray], state,
              server_round: int) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        weights = shared[WEIGHTS][self.s, self.y]
        model = {k: v for k, v in shared.items() if k != WEIGHTS}
        arrays, metrics = super().train(model, own, state, server_round, sample_weights=weights)
        return arrays, {**metrics, WEIGHT_SUM: float(weights.sum())}
