"""FedAvg (McMahan et al., AISTATS 2017) for classification, with fairness-aware evaluation.

Communication-Efficient Learning of Deep Networks from Decentralized Data,
https://arxiv.org/abs/1602.05629. Sampled clients train locally from the global weights and
upload their weights; the server takes the example-weighted mean.

Evaluation: every client evaluates the global model on its own test rows and replies with its
confusion counts per sensitive group (ArrayRecord "arrays", key "confusion", shape
[groups, classes, classes]); pooled counts give accuracy and the global fairness gaps, per-client
counts the local ones (max and mean over clients), see :mod:`fedsim.metrics.fairness`. Beside
every gap goes its noise floor ("<gap>_floor", e.g. "dp_local_max_floor"): the value an exactly
fair classifier with the same prediction rates would measure on the same test rows
(:func:`fedsim.metrics.fairness.noise_floors`).

Training is a weighted sum, so nodes send one checked sum of their clients (weights and losses
times weights included, :mod:`fedsim.node_sums`), unless a subclass aggregates otherwise
(FairFed, FedFB, FedFACT need each client's reply); evaluation stays per client (the local gaps
need each client's counts).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord
from flwr.serverapp import Grid

from fedsim.messages.common import NUM_EXAMPLES, TRAIN_LOSS
from fedsim.messages.fedavg import CONFUSION
from fedsim.metrics import global_and_local, noise_floors
from fedsim.node_sums import Sum, SumRule
from fedsim.protocol import ClientReply
from strategies.base import PartitionedStrategy


class FedAvg(PartitionedStrategy):
    """Example-weighted model averaging over partition-sampled clients.

    Parameters are those of :class:`~strategies.base.PartitionedStrategy`. Each client's train
    reply holds its model arrays and the metrics "num-examples" and "train-loss"; its
    evaluation reply holds the array "confusion".
    """

    # Reply arrays besides the model that a subclass's clients add to their training replies.
    extra_reply_arrays: tuple[str, ...] = ()
    _expected: dict[str, tuple] = {}  # set by expect_model() each round

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self.expect_model(arrays)
        return self.instructions(MessageType.TRAIN, server_round, self.sample(server_round),
                                 shared=arrays)

    def expect_model(self, arrays: ArrayRecord) -> None:
        """Remember the global model's layout, which trained models must keep."""
        self._expected = {k: (tuple(v.shape), str(v.dtype)) for k, v in arrays.items()}

    def check_reply(self, reply: ClientReply) -> str | None:
        """A trained model must have the global model's arrays, shapes and dtypes."""
        if self.phase != MessageType.TRAIN:
            return None
        got = {k: (tuple(v.shape), str(v.dtype)) for k, v in reply.arrays.items()
               if k not in self.extra_reply_arrays}
        return None if got == self._expected else (
            f"model arrays {got} differ from the global model's {self._expected}")

    def sum_rule(self, message_type: str) -> SumRule | None:
        """Training: the models weighted by "num-examples". Only this class's
        ``aggregate_train`` reads sums: a subclass that overrides it gets per-client replies."""
        if message_type != MessageType.TRAIN or \
                type(self).aggregate_train is not FedAvg.aggregate_train:
            return None
        return SumRule(dense=tuple(self._expected), weight=NUM_EXAMPLES)

    def sum_shapes(self, message_type: str) -> dict[str, tuple[int, ...]]:
        return {k: shape for k, (shape, _) in self._expected.items()}

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        contributions = self.collect(replies)
        if not any(isinstance(c, Sum) for c in contributions):
            return self.average(contributions)
        total = self.sum_rule(MessageType.TRAIN).total(contributions)
        metrics = {"train_loss": total.metrics[TRAIN_LOSS] / total.weight}
        self.record_train(metrics)
        return (ArrayRecord({k: Array((total.arrays[k] / total.weight).astype(dtype))
                             for k, (_, dtype) in self._expected.items()}),
                MetricRecord(metrics))

    def average(self, clients: list[ClientReply], weights: Iterable[float] | None = None
                ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Weighted mean of the clients' arrays and train losses (recorded); the weights
        (normalised here) default to the clients' example counts. (Nodes' sums are divided by
        their total weight instead, in :meth:`aggregate_train`: equal to float tolerance.)"""
        if not clients:
            return None, None
        weights = np.array([c.metrics[NUM_EXAMPLES] for c in clients] if weights is None
                           else list(weights), dtype=np.float64)
        weights /= weights.sum()
        average = {name: sum(w * c.arrays[name] for w, c in zip(weights, clients))
                   for name in clients[0].arrays if name not in self.extra_reply_arrays}
        metrics = {"train_loss": float(sum(w * c.metrics[TRAIN_LOSS]
                                           for w, c in zip(weights, clients)))}
        self.record_train(metrics)
        return (ArrayRecord({k: Array(v.astype(clients[0].arrays[k].dtype))
                             for k, v in average.items()}), MetricRecord(metrics))

    def evaluation_metrics(self, replies: list[ClientReply]) -> dict[str, float]:
        # A client without test rows has no local gaps; it is left out of the local max/mean.
        counts = [c.arrays[CONFUSION] for c in replies if c.arrays[CONFUSION].sum() > 0]
        return {**global_and_local(counts), **noise_floors(counts)}
