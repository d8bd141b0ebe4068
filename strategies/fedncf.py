"""FedNCF: federated NeuMF as the FedRecGEL authors run it (FedSGD with a server Adam).

Neural Collaborative Filtering (He et al., WWW 2017) federated with one user per client; the
protocol is that of anonymifish/FedRecGEL with SAM radius 0 (../shared/research/fedrecgel.md):
clients upload the *gradient* of the shared parameters (item embeddings, MLP tower, head); the
server takes the unweighted mean over the replies, with zero rows for items a client did not
touch, and steps a persistent Adam (lr 1e-3). User embeddings stay on the clients.

Item-sparse messages: before training, each sampled client is asked (``query.rows``) which item
rows its round sample needs (its positives and this round's negatives; the upload reveals the
same set), and receives only those rows plus the dense layers. Evaluation sends the full shared
model, since ranking needs every item.

Messages
--------
- ``query.rows`` reply: ArrayRecord "arrays" {"item_ids": int64 [n]}.
- train: ArrayRecord "arrays" {"item_ids", "item_gmf.weight" [n, d], "item_mlp.weight" [n, d'],
  dense tensors}; reply: the same keys holding gradients, and MetricRecord "metrics"
  {"num-examples", "train-loss"}.
- evaluate: ArrayRecord "arrays" with the full shared state dict; reply: MetricRecord "metrics"
  of metric sums and counts (see :mod:`clients.ranking_eval`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord
from flwr.serverapp import Grid

from clients.ranking_eval import means_from_sums
from fedsim.models import NeuMF
from fedsim.models.neumf import ITEM_TABLES, split_shared_private
from strategies.base import PartitionedStrategy

ROWS = f"{MessageType.QUERY}.rows"


class FedNCF(PartitionedStrategy):
    """FedSGD + server Adam over item-sparse client gradients.

    Parameters
    ----------
    server_lr : float (default: 0.001)
        Learning rate of the persistent server Adam.
    **kwargs
        Those of :class:`~strategies.base.PartitionedStrategy`.
    """

    def __init__(self, *, server_lr: float = 1e-3, **kwargs: Any):
        super().__init__(**kwargs)
        self.server_lr = server_lr
        self.params: dict[str, torch.Tensor] = {}
        self.optimizer: torch.optim.Adam | None = None

    @staticmethod
    def initial_arrays(num_items: int, factor_dim: int = 32, mlp_layers: int = 3,
                       seed: int = 0) -> ArrayRecord:
        """Shared NeuMF parameters initialised as in the authors' code, from `seed`."""
        torch.manual_seed(seed)
        shared, _ = split_shared_private(NeuMF(1, num_items, factor_dim, mlp_layers).state_dict())
        return ArrayRecord(shared)

    def start(self, grid: Grid, initial_arrays: ArrayRecord, num_rounds: int = 3,
              timeout: float = 3600, *args: Any, **kwargs: Any):
        self.params = {k: v.clone() for k, v in initial_arrays.to_torch_state_dict().items()}
        self.optimizer = torch.optim.Adam(list(self.params.values()), lr=self.server_lr)
        return super().start(grid, initial_arrays, num_rounds, timeout, *args, **kwargs)

    # --- training ------------------------------------------------------------------------------
    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        nodes = [self.partition_to_node[p] for p in self.sample(server_round)]
        asks = [self.message({}, node, ROWS, server_round) for node in nodes]
        rows = {reply.metadata.src_node_id: reply.content.array_records["arrays"]["item_ids"].numpy()
                for reply in self.valid_replies(grid.send_and_receive(asks, timeout=self.timeout))}
        # Dense layers are the same for everyone: serialise them once per round.
        dense = {k: Array(v.numpy()) for k, v in self.params.items() if k not in ITEM_TABLES}
        messages = []
        for node, item_ids in rows.items():
            index = torch.from_numpy(item_ids)
            payload = {"item_ids": Array(item_ids), **dense}
            payload.update({k: Array(self.params[k][index].numpy()) for k in ITEM_TABLES})
            messages.append(self.message({"arrays": ArrayRecord(payload)}, node,
                                         MessageType.TRAIN, server_round))
        return messages

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        valid = self.valid_replies(replies)
        if not valid:
            return None, None
        gradient = mean_sparse_gradient(self.params, [r.content.array_records["arrays"]
                                                      for r in valid])
        self.optimizer.zero_grad()
        for name, param in self.params.items():
            param.grad = gradient[name]
        self.optimizer.step()
        examples = [r.content.metric_records["metrics"]["num-examples"] for r in valid]
        losses = [r.content.metric_records["metrics"]["train-loss"] for r in valid]
        metrics = {"train_loss": float(np.mean(losses)), "train_clients": len(valid),
                   "train_positives": int(np.sum(examples))}
        self.record_train(metrics)
        return ArrayRecord({k: Array(v.numpy()) for k, v in self.params.items()}), MetricRecord(metrics)

    # --- evaluation ------------------------------------------------------------------------------
    def evaluate_content(self, arrays: ArrayRecord) -> dict[str, Any]:
        return {"arrays": arrays}

    def evaluation_metrics(self, replies: list[Message]) -> dict[str, float]:
        sums: dict[str, float] = {}
        for reply in replies:
            for name, value in reply.content.metric_records["metrics"].items():
                sums[name] = sums.get(name, 0.0) + float(value)
        return means_from_sums(sums)

    # --- checkpointing ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"params": {k: v.clone() for k, v in self.params.items()},
                "optimizer": self.optimizer.state_dict() if self.optimizer else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.params = {k: v.clone() for k, v in state["params"].items()}
        self.optimizer = torch.optim.Adam(list(self.params.values()), lr=self.server_lr)
        if state["optimizer"] is not None:
            self.optimizer.load_state_dict(state["optimizer"])


def mean_sparse_gradient(params: dict[str, torch.Tensor],
                         uploads: list[ArrayRecord]) -> dict[str, torch.Tensor]:
    """Mean over uploads of item-sparse gradients, as a dense gradient per parameter.

    Item-table gradients arrive as rows for ``item_ids``; the mean divides by the number of
    uploads, so an item's missing rows count as zeros (the authors' dense mean with zero rows).
    """
    total = {name: torch.zeros_like(p) for name, p in params.items()}
    for upload in uploads:
        index = torch.from_numpy(upload["item_ids"].numpy())
        for name in params:
            grad = torch.from_numpy(upload[name].numpy())
            if name in ITEM_TABLES:
                total[name].index_add_(0, index, grad)
            else:
                total[name] += grad
    return {name: g / len(uploads) for name, g in total.items()}
