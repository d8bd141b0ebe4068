"""The base every fedsim strategy shares: partition-aware, reproducible, accountable.

Flower's own strategies sample nodes with ``random.sample`` over a set of random node ids, so
client selection cannot be reproduced across runs (../shared/research/flower.md §1.9, §5).
:class:`PartitionedStrategy` fixes that and adds what experiments need:

- discovery: before round 1 it waits until ``num_partitions`` nodes have registered and asks each
  (message type ``query.discover``) for its ``partition-id`` (reply: ConfigRecord "info" with
  "partition-id"); clients are then sampled *by partition id* with ``default_rng([seed, round])``;
- round-0 evaluation, so learning curves start from the initial model;
- accounting: bytes of array payload each way, error replies per round;
- history: one record per round (train and evaluation metrics, bytes, failures, seconds),
  handed to an optional ``on_round`` callback as soon as the round ends, so nothing is lost if
  a run dies later.

A subclass writes ``configure_train``/``aggregate_train`` and two evaluation hooks:
``evaluate_content`` (what each node receives) and ``evaluation_metrics`` (replies -> metrics).
Every message carries ``message_config`` (plain scalars) in its "config" ConfigRecord together
with "server-round"; fedsim's runner puts the experiment spec there so stateless clients can
rebuild their data.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy

DISCOVER = f"{MessageType.QUERY}.discover"


class PartitionedStrategy(Strategy):
    """Base strategy: discovery, seeded sampling by partition id, accounting, history.

    Parameters
    ----------
    num_partitions : int
        Number of client nodes (partitions) to wait for and to sample from.
    fraction_train : float (default: 0.1)
        Fraction of partitions trained each round: ``max(1, floor(fraction * num_partitions))``.
    seed : int (default: 0)
        Seed of client sampling (``default_rng([seed, round])``).
    evaluate_every : int (default: 1)
        Federated evaluation every this many rounds; round 0 and the last round always.
    message_config : dict, optional
        Scalars added to the "config" record of every message (fedsim sends the spec here).
    on_round : callable, optional
        ``on_round(record: dict)`` called at the end of every round (and round 0).
    node_wait_timeout : float (default: 600)
        Seconds to wait for all nodes to register before failing.
    """

    def __init__(self, *, num_partitions: int, fraction_train: float = 0.1, seed: int = 0,
                 evaluate_every: int = 1, message_config: dict[str, Any] | None = None,
                 on_round: Callable[[dict[str, Any]], None] | None = None,
                 node_wait_timeout: float = 600.0):
        if num_partitions < 1:
            raise ValueError(f"num_partitions = {num_partitions}: expected >= 1")
        if not 0.0 < fraction_train <= 1.0:
            raise ValueError(f"fraction_train = {fraction_train}: expected a value in (0, 1]")
        self.num_partitions = num_partitions
        self.fraction_train = fraction_train
        self.seed = seed
        self.evaluate_every = evaluate_every
        self.message_config = dict(message_config or {})
        self.on_round = on_round
        self.node_wait_timeout = node_wait_timeout
        self.partition_to_node: dict[int, int] = {}
        self.node_to_partition: dict[int, int] = {}
        self.num_rounds = 0
        self.timeout = 3600.0
        self.history: list[dict[str, Any]] = []
        self.bytes_up = 0
        self.bytes_down = 0
        self._round: dict[str, Any] = {}
        self._round_start = time.perf_counter()

    # --- hooks for subclasses ------------------------------------------------------------------
    def evaluate_content(self, arrays: ArrayRecord) -> dict[str, Any]:
        """Records (besides "config") sent to every node for evaluation."""
        raise NotImplementedError

    def evaluation_metrics(self, replies: list[Message]) -> dict[str, float]:
        """Aggregate valid evaluation replies into metrics."""
        raise NotImplementedError

    # --- discovery and sampling ------------------------------------------------------------------
    def connect(self, grid: Grid) -> None:
        """Wait for every node, then map node id <-> partition id with a query round."""
        deadline = time.monotonic() + self.node_wait_timeout
        while len(nodes := sorted(grid.get_node_ids())) < self.num_partitions:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(nodes)} of {self.num_partitions} nodes registered "
                                   f"within {self.node_wait_timeout:.0f} s")
            time.sleep(0.1)
        messages = [self.message({}, node, DISCOVER, 0) for node in nodes]
        for reply in grid.send_and_receive(messages, timeout=self.node_wait_timeout):
            if reply.has_error():
                raise RuntimeError(f"node {reply.metadata.src_node_id} failed discovery: "
                                   f"{reply.error.reason}")
            partition = int(reply.content.config_records["info"]["partition-id"])
            self.node_to_partition[reply.metadata.src_node_id] = partition
            self.partition_to_node[partition] = reply.metadata.src_node_id
        missing = sorted(set(range(self.num_partitions)) - set(self.partition_to_node))
        if missing:
            raise RuntimeError(f"no node answered discovery for partitions {missing[:10]}"
                               f"{'...' if len(missing) > 10 else ''}")

    def sample(self, server_round: int) -> list[int]:
        """Partition ids trained in `server_round`, sorted; reproducible from (seed, round)."""
        count = max(1, int(self.num_partitions * self.fraction_train))
        rng = np.random.default_rng([self.seed, server_round])
        return sorted(int(p) for p in rng.choice(self.num_partitions, count, replace=False))

    # --- messages and accounting -----------------------------------------------------------------
    def message(self, records: dict[str, Any], node: int, message_type: str,
                server_round: int) -> Message:
        config = ConfigRecord({"server-round": server_round, **self.message_config})
        content = RecordDict({**records, "config": config})
        self.bytes_down += payload_bytes(content)
        return Message(content, dst_node_id=node, message_type=message_type)

    def valid_replies(self, replies: Iterable[Message]) -> list[Message]:
        """Replies without errors; errors are counted for the round and logged."""
        valid = []
        for reply in replies:
            if reply.has_error():
                self._round["failures"] = self._round.get("failures", 0) + 1
                log(WARNING, "reply from partition %s failed: %s",
                    self.node_to_partition.get(reply.metadata.src_node_id, "?"),
                    reply.error.reason)
                continue
            self.bytes_up += payload_bytes(reply.content)
            valid.append(reply)
        return valid

    def partition_of(self, reply: Message) -> int:
        return self.node_to_partition[reply.metadata.src_node_id]

    # --- the loop ------------------------------------------------------------------------------
    def start(self, grid: Grid, initial_arrays: ArrayRecord, num_rounds: int = 3,
              timeout: float = 3600, train_config: ConfigRecord | None = None,
              evaluate_config: ConfigRecord | None = None,
              evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None
              ) -> Result:
        """Discover partitions, evaluate round 0, then run Flower's round loop."""
        self.num_rounds = num_rounds
        self.timeout = timeout
        if not self.partition_to_node:
            self.connect(grid)
        self._round_start = time.perf_counter()
        replies = grid.send_and_receive(
            self.configure_evaluate(0, initial_arrays, ConfigRecord(), grid), timeout=timeout)
        self.aggregate_evaluate(0, replies)
        return super().start(grid, initial_arrays, num_rounds, timeout, train_config,
                             evaluate_config, evaluate_fn)

    def record_train(self, metrics: dict[str, float]) -> None:
        """Keep this round's aggregated train metrics for its history record."""
        self._round.update(metrics)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        due = server_round % self.evaluate_every == 0 or server_round == self.num_rounds
        if not due:
            return []
        records = self.evaluate_content(arrays)
        return [self.message(records, self.partition_to_node[p], MessageType.EVALUATE,
                             server_round) for p in range(self.num_partitions)]

    def aggregate_evaluate(self, server_round: int,
                           replies: Iterable[Message]) -> MetricRecord | None:
        """Evaluation metrics of the round; also closes the round's history record."""
        replies = list(replies)
        valid = self.valid_replies(replies)
        metrics = self.evaluation_metrics(valid) if valid else {}
        record = {"round": server_round, **self._round, **metrics,
                  "failures": self._round.get("failures", 0),
                  "bytes_up": self.bytes_up, "bytes_down": self.bytes_down,
                  "round_seconds": time.perf_counter() - self._round_start}
        self.history.append(record)
        if self.on_round is not None:
            self.on_round(record)
        if metrics:
            log(INFO, "round %s: %s", server_round,
                ", ".join(f"{k}={v:.4f}" for k, v in list(metrics.items())[:4]))
        self._round = {}
        self._round_start = time.perf_counter()
        return MetricRecord(metrics) if metrics else None

    def summary(self) -> None:
        log(INFO, "\t%s: %d partitions, fraction_train=%s, seed=%s, evaluate_every=%s",
            type(self).__name__, self.num_partitions, self.fraction_train, self.seed,
            self.evaluate_every)


def payload_bytes(content: RecordDict) -> int:
    """Bytes of serialized array data in a message (what dominates its size)."""
    return sum(len(array.data) for record in content.array_records.values()
               for array in record.values())
