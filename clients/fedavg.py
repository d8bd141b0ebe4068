"""FedAvg client for tabular classification: local epochs of minibatch training, then upload weights.

Evaluation returns the client's confusion counts per sensitive group (``[groups, classes,
classes]``), not rates: summed over clients they give the pooled (global) fairness metrics
exactly, and per client they give the local ones.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from fedsim.federation import load_federation
from fedsim.messages.common import NUM_EXAMPLES, TRAIN_LOSS
from fedsim.messages.fedavg import CONFUSION
from fedsim.metrics import confusion_counts
from fedsim.models import make_classifier


class FedAvgClient:
    """One partition's rows and the FedAvg computations on them (stateless between rounds)."""

    def __init__(self, spec: Mapping[str, Any], partition_id: int):
        federation = load_federation(spec)
        data = federation.dataset
        train, test = federation.train_parts[partition_id], federation.test_parts[partition_id]
        self.x, self.y, self.s = data.x_train[train], data.y_train[train], data.s_train[train]
        self.x_test, self.y_test, self.s_test = data.x_test[test], data.y_test[test], data.s_test[test]
        self.num_classes, self.num_groups = data.num_classes, data.num_groups
        self.model = make_classifier(spec["model"], data.num_features, data.num_classes,
                                     spec["mlp.hidden"])
        self.partition_id = partition_id
        self.seed = spec["seed"]
        self.epochs = spec["fedavg.local_epochs"]
        self.lr = spec["fedavg.lr"]
        self.batch_size = spec["fedavg.batch_size"]
        self.optimizer = spec["fedavg.optimizer"]

    def _load(self, shared: dict[str, np.ndarray]) -> None:
        self.model.load_state_dict({k: torch.tensor(v) for k, v in shared.items()})

    def train(self, shared: dict[str, np.ndarray], own: dict[str, np.ndarray], state,
              server_round: int, sample_weights: np.ndarray | None = None
              ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """Local epochs from the global weights in `shared` (each training row's loss scaled by
        `sample_weights` when given); returns the new weights."""
        self._load(shared)
        loss = local_training(self.model, self.x, self.y, epochs=self.epochs, lr=self.lr,
                              batch_size=self.batch_size, optimizer=self.optimizer,
                              seed=[self.seed, self.partition_id, server_round],
                              sample_weights=sample_weights)
        weights = {k: v.detach().numpy() for k, v in self.model.state_dict().items()}
        return weights, {NUM_EXAMPLES: len(self.y), TRAIN_LOSS: loss}

    def evaluate(self, shared: dict[str, np.ndarray], own: dict[str, np.ndarray],
                 state, server_round: int) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """Confusion counts per group of the global model on this client's test rows."""
        self._load(shared)
        counts = self.confusion(self.x_test, self.y_test, self.s_test)
        return {CONFUSION: counts}, {NUM_EXAMPLES: len(self.y_test)}

    def confusion(self, x: np.ndarray, y: np.ndarray, s: np.ndarray) -> np.ndarray:
        """Confusion counts per group [groups, classes, classes] of the loaded model on rows."""
        with torch.no_grad():
            predicted = self.model(torch.from_numpy(x)).argmax(1).numpy()
        return confusion_counts(y, predicted, s, self.num_classes, self.num_groups)


def local_training(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, *, epochs: int,
                   lr: float, batch_size: int, optimizer: str, seed: list[int],
                   sample_weights: np.ndarray | None = None) -> float:
    """Minibatch cross-entropy training in place; returns the mean loss of the last epoch.

    The batch order comes from `seed` (seed, partition, round), so any actor reproduces it.
    The optimizer is fresh each round, as in FedAvg (no client state between rounds).
    With `sample_weights` [rows] the batch loss is the batch mean of weight * cross entropy
    (weights of 1 give the unweighted gradients bit for bit).
    """
    rng = np.random.default_rng(seed)
    opt = (torch.optim.Adam if optimizer == "adam" else torch.optim.SGD)(model.parameters(), lr=lr)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    ws = None if sample_weights is None else torch.as_tensor(sample_weights, dtype=torch.float32)
    last = 0.0
    for _ in range(epochs):
        order = torch.from_numpy(rng.permutation(len(y)))
        total = 0.0
        for start in range(0, len(y), batch_size):
            batch = order[start:start + batch_size]
            opt.zero_grad()
            if ws is None:
                loss = torch.nn.functional.cross_entropy(model(xs[batch]), ys[batch])
            else:
                loss = (torch.nn.functional.cross_entropy(model(xs[batch]), ys[batch],
                                                          reduction="none") * ws[batch]).mean()
            loss.backward()
            opt.step()
            total += loss.item() * len(batch)
        last = total / max(len(y), 1)
    return last
