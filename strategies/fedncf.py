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

Dense rows (``dense_rows=True``, fedsim's client-side DP mode, :mod:`fedsim.privacy`): no row
request; every sampled client receives every item row and uploads a gradient over every row
(zero where its sample touched none), clipped and noised as a whole. The item-sparse protocol
tells the server which items each client's sample touched, in the row request and again in the
upload; those sets are the client's positives plus this round's fresh negatives, so the items
present in every round a client trains are its positives. Noising only the touched rows would
leave that in the clear; dense rows hide it, at the cost of a full item table each way per client.

Messages (layout: :mod:`fedsim.protocol`; keys: :mod:`fedsim.messages.fedncf`)
-----------------------------------------------------------------------------
- ``query.rows``: no arrays; each client replies "item_ids" (int64 [n]).
- train: "arrays" = the dense layers; per client "item_ids", "item_gmf.weight" [n, d],
  "item_mlp.weight" [n, d']; each client replies the gradients under the same names (and
  "item_ids"), with metrics "num-examples" (positives) and "train-loss".
- evaluate: "arrays" = the full shared state dict; each client replies metric sums and counts
  (:mod:`fedsim.metrics.leave_one_out`).

Both the training uploads and the evaluation replies are summed by the server, so nodes send
one checked sum of their clients (:mod:`fedsim.node_sums`; :meth:`FedNCF.sum_rule`): per item
row the sum of the clients' gradients and the number of clients that touched it, the sum of the
dense-layer gradients, of the losses and of the positives; in evaluation the metric sums.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord
from flwr.serverapp import Grid

from fedsim.messages.common import NUM_EXAMPLES, TRAIN_LOSS
from fedsim.messages.fedncf import ITEM_IDS, ROWS
from fedsim.metrics.pooling import add, pooled_means
from fedsim.models import NeuMF, Recommender
from fedsim.node_sums import Sum, SumRule
from fedsim.protocol import ClientReply
from strategies.base import PartitionedStrategy


class FedNCF(PartitionedStrategy):
    """FedSGD + server Adam over item-sparse client gradients.

    Parameters
    ----------
    server_lr : float (default: 0.001)
        Learning rate of the persistent server Adam.
    item_tables : sequence of str (default: NeuMF's)
        Names of the item-embedding tables (sent and aggregated row by row); the backbone's
        ``ITEM_TABLES``, so the same strategy serves NeuMF (FedNCF) and MF (FedMF).
    dense_rows : bool (default: False)
        Send every client every item row without asking which it needs (DP mode: the uploads
        then cover every row and do not reveal which items a client touched).
    **kwargs
        Those of :class:`~strategies.base.PartitionedStrategy`.
    """

    def __init__(self, *, server_lr: float = 1e-3,
                 item_tables: Sequence[str] = NeuMF.ITEM_TABLES, dense_rows: bool = False,
                 **kwargs: Any):
        super().__init__(**kwargs)
        self.server_lr = server_lr
        self.item_tables = tuple(item_tables)
        self.dense_rows = dense_rows
        self.params: dict[str, torch.Tensor] = {}
        self.optimizer: torch.optim.Adam | None = None
        self._sent: dict[int, np.ndarray] = {}  # partition -> item ids sent this round

    @staticmethod
    def initial_arrays(num_items: int, seed: int = 0, backbone: type[Recommender] = NeuMF,
                       **sizes: Any) -> ArrayRecord:
        """Shared parameters of `backbone` (sizes as its constructor's) initialised as in the
        authors' code, from `seed`."""
        torch.manual_seed(seed)
        shared, _ = backbone.split(backbone(1, num_items, **sizes).state_dict())
        return ArrayRecord(shared)

    def start(self, grid: Grid, initial_arrays: ArrayRecord, num_rounds: int = 3,
              *args: Any, **kwargs: Any):
        if not self.params:  # a resumed run has loaded its parameters and optimizer already
            self.params = {k: v.clone() for k, v in initial_arrays.to_torch_state_dict().items()}
            self.optimizer = torch.optim.Adam(list(self.params.values()), lr=self.server_lr)
        return super().start(grid, initial_arrays, num_rounds, *args, **kwargs)

    # --- training ------------------------------------------------------------------------------
    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        if self.dense_rows:
            return self._dense_instructions(server_round)
        asks = self.instructions(ROWS, server_round, self.sample(server_round))
        rows = {c.partition: c.arrays[ITEM_IDS]
                for c in self.collect(self.exchange(grid, asks))}
        dense = ArrayRecord({k: Array(v.numpy()) for k, v in self.params.items()
                             if k not in self.item_tables})
        self._sent = rows
        per_client = {partition: self.client_rows(item_ids) for partition, item_ids in rows.items()}
        return self.instructions(MessageType.TRAIN, server_round, sorted(rows), shared=dense,
                                 per_client=per_client)

    def client_rows(self, item_ids: np.ndarray) -> dict[str, np.ndarray]:
        """What a client gets for the rows it asked for: "item_ids" and the item tables' rows
        (a subclass may add per-row arrays)."""
        index = torch.from_numpy(item_ids)
        return {ITEM_IDS: item_ids,
                **{k: self.params[k][index].numpy() for k in self.item_tables}}

    def _dense_instructions(self, server_round: int) -> list[Message]:
        """Training messages of DP mode: the whole shared model for every sampled client, whose
        "item_ids" are then every item, and no row request."""
        sampled = self.sample(server_round)
        every = np.arange(len(self.params[self.item_tables[0]]), dtype=np.int64)
        self._sent = {partition: every for partition in sampled}
        shared = ArrayRecord({k: Array(v.numpy()) for k, v in self.params.items()})
        return self.instructions(MessageType.TRAIN, server_round, sampled, shared=shared,
                                 per_client={p: {ITEM_IDS: every} for p in sampled})

    def check_reply(self, reply: ClientReply) -> str | None:
        """Row requests: unique int64 item ids of the catalogue. Uploads: exactly the rows sent,
        and a float32 gradient of the right shape for every shared parameter."""
        if self.phase == MessageType.EVALUATE:
            return None
        problem = item_ids_problem(reply.arrays.get(ITEM_IDS),
                                   len(self.params[self.item_tables[0]]))
        if problem is not None or self.phase == ROWS:
            return problem
        # The node-side check of a summed upload, against what this client was sent.
        tables = {k: v.numpy() for k, v in self.params.items()}
        return self.sum_rule(MessageType.TRAIN).layout_problem(
            reply.arrays, tables, {ITEM_IDS: self._sent.get(reply.partition)})

    def sum_rule(self, message_type: str) -> SumRule | None:
        """Training: the uploads' gradients (item rows keyed by "item_ids", dense layers),
        unweighted; evaluation: the metric sums; the row request: per client."""
        if message_type == MessageType.TRAIN:
            return upload_rule(self.params, self.item_tables)
        return SumRule() if message_type == MessageType.EVALUATE else None

    def sum_shapes(self, message_type: str) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape) for k, v in self.params.items()}

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        contributions = self.collect(replies)
        if not contributions:
            return None, None
        total = upload_rule(self.params, self.item_tables).total(contributions)
        gradient = self.mean_gradient(total)
        self.optimizer.zero_grad()
        for name, param in self.params.items():
            param.grad = gradient[name]
        self.optimizer.step()
        metrics = {"train_loss": total.metrics[TRAIN_LOSS] / total.count,
                   "train_clients": total.count,
                   "train_positives": int(total.metrics[NUM_EXAMPLES])}
        self.record_train(metrics)
        arrays = ArrayRecord({k: Array(v.numpy()) for k, v in self.params.items()})
        return arrays, MetricRecord(metrics)

    def mean_gradient(self, total: Sum) -> dict[str, torch.Tensor]:
        """The gradient the server Adam steps on: the authors' mean over all replies."""
        return mean_of(self.params, total, self.item_tables)

    # --- evaluation ------------------------------------------------------------------------------
    def evaluation_metrics(self, replies: list[ClientReply | Sum]) -> dict[str, float]:
        return pooled_means(add(reply.metrics for reply in replies))

    # --- checkpointing ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "params": {k: v.clone() for k, v in self.params.items()},
                "optimizer": self.optimizer.state_dict() if self.optimizer else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.params = {k: v.clone() for k, v in state["params"].items()}
        self.optimizer = torch.optim.Adam(list(self.params.values()), lr=self.server_lr)
        if state["optimizer"] is not None:
            self.optimizer.load_state_dict(state["optimizer"])


def upload_rule(params: dict[str, torch.Tensor], item_tables: Sequence[str]) -> SumRule:
    """How item-sparse gradient uploads add up: item rows keyed by "item_ids", the rest dense."""
    return SumRule(dense=tuple(k for k in params if k not in item_tables), rows=ITEM_IDS,
                   row_arrays=tuple(item_tables))


def dense_sums(params: dict[str, torch.Tensor], total: Sum, item_tables: Sequence[str]
               ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """A sum of item-sparse gradients (:class:`fedsim.node_sums.Sum`) as dense tensors, and per
    item the number of uploads that touched it (the two divisors of the means below)."""
    index = torch.from_numpy(total.ids)
    touches = torch.zeros(len(params[item_tables[0]]))
    touches[index] = torch.from_numpy(total.touches).float()
    grads = {}
    for name, param in params.items():
        value = torch.from_numpy(total.arrays[name])
        grads[name] = torch.zeros_like(param).index_copy_(0, index, value) \
            if name in item_tables else value.clone()
    return grads, touches


def mean_of(params: dict[str, torch.Tensor], total: Sum, item_tables: Sequence[str]
            ) -> dict[str, torch.Tensor]:
    """Mean over the summed uploads, as a dense gradient per parameter: the sum divided by the
    number of uploads, so an item's missing rows count as zeros (the authors' dense mean)."""
    grads, _ = dense_sums(params, total, item_tables)
    return {name: g / total.count for name, g in grads.items()}


def per_item_mean_of(params: dict[str, torch.Tensor], total: Sum, item_tables: Sequence[str]
                     ) -> dict[str, torch.Tensor]:
    """Like :func:`mean_of`, but each item row is averaged over the uploads that touched that
    item (untouched rows stay zero); dense layers are still averaged over all.

    The authors' divisor (all replies) shrinks a rarely sampled item's gradient by the share of
    clients that saw it; this mean treats every item as its own task, the item-centred view of
    FedRecGEL's abstract (our improvement, not in their code).
    """
    grads, touches = dense_sums(params, total, item_tables)
    per_item = touches.clamp(min=1)[:, None]
    return {name: g / per_item if name in item_tables else g / total.count
            for name, g in grads.items()}


def sum_of_uploads(params: dict[str, torch.Tensor], uploads: list[dict[str, np.ndarray]],
                   item_tables: Sequence[str]) -> Sum:
    """The sum of item-sparse gradient uploads (one dict of arrays each), in their order."""
    rule = upload_rule(params, item_tables)
    return rule.add([rule.one(k, upload, {}) for k, upload in enumerate(uploads)])


def mean_sparse_gradient(params: dict[str, torch.Tensor], uploads: list[dict[str, np.ndarray]],
                         item_tables: Sequence[str]) -> dict[str, torch.Tensor]:
    """:func:`mean_of` the uploads' sum: item-table gradients arrive as rows for "item_ids"."""
    return mean_of(params, sum_of_uploads(params, uploads, item_tables), item_tables)


def per_item_mean_gradient(params: dict[str, torch.Tensor], uploads: list[dict[str, np.ndarray]],
                           item_tables: Sequence[str]) -> dict[str, torch.Tensor]:
    """:func:`per_item_mean_of` the uploads' sum."""
    return per_item_mean_of(params, sum_of_uploads(params, uploads, item_tables), item_tables)


def item_ids_problem(ids: np.ndarray | None, num_items: int) -> str | None:
    """Why a reply's "item_ids" (a row request, or the rows of an upload) is malformed, or None:
    a 1-d int64 array of unique item ids of the catalogue."""
    if ids is None or ids.dtype != np.int64 or ids.ndim != 1:
        return "item_ids missing or not a 1-d int64 array"
    if ids.size and (ids.min() < 0 or ids.max() >= num_items):
        return f"item ids outside [0, {num_items})"
    if np.unique(ids).size != ids.size:
        return "repeated item ids"
    return None
