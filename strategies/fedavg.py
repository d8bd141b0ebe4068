"""FedAvg (McMahan et al., AISTATS 2017) for classification, with fairness-aware evaluation.

Communication-Efficient Learning of Deep Networks from Decentralized Data,
https://arxiv.org/abs/1602.05629. Sampled clients train locally from the global weights and
upload their weights; the server takes the example-weighted mean.

Evaluation: every client evaluates the global model on its own test rows and replies with its
confusion counts per sensitive group (ArrayRecord "arrays", key "confusion", shape
[groups, classes, classes]); pooled counts give accuracy and the global fairness gaps, per-client
counts the local ones (max and mean over clients), see :mod:`fedsim.metrics.fairness`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords, aggregate_metricrecords

from fedsim.metrics import global_and_local
from strategies.base import PartitionedStrategy


class FedAvg(PartitionedStrategy):
    """Example-weighted model averaging over partition-sampled clients.

    Parameters are those of :class:`~strategies.base.PartitionedStrategy`. Client replies must
    hold one ArrayRecord "arrays" (the model) and a MetricRecord "metrics" with "num-examples".
    """

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        return [self.message({"arrays": arrays}, self.partition_to_node[p], MessageType.TRAIN,
                             server_round) for p in self.sample(server_round)]

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        valid = [reply.content for reply in self.valid_replies(replies)]
        if not valid:
            return None, None
        metrics = aggregate_metricrecords(valid, "num-examples")
        self.record_train({"train_loss": float(metrics["train-loss"])})
        return aggregate_arrayrecords(valid, "num-examples"), metrics

    def evaluate_content(self, arrays: ArrayRecord) -> dict[str, Any]:
        return {"arrays": arrays}

    def evaluation_metrics(self, replies: list[Message]) -> dict[str, float]:
        counts = [reply.content.array_records["arrays"]["confusion"].numpy() for reply in replies]
        return global_and_local(counts)
