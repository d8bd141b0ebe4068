"""The base every fedsim strategy shares: partition-aware, reproducible, accountable.

Flower's own strategies sample nodes with ``random.sample`` over a set of random node ids, so
client selection cannot be reproduced across runs (../shared/research/flower.md §1.9, §5).
:class:`PartitionedStrategy` fixes that and adds what experiments need:

- logical clients: a node may host several clients (partitions); every message goes to a node
  and addresses a list of its clients (layout in :mod:`fedsim.protocol`);
- discovery: before round 1 it waits until ``num_nodes`` nodes have registered and asks each
  (message type ``query.discover``) which partitions it hosts (reply: ConfigRecord "info" with
  "partition-ids"); clients are then sampled *by partition id* with ``default_rng([seed, round])``
  and replies are aggregated in partition order, so results do not depend on node ids or on how
  clients are spread over nodes;
- round-0 evaluation, so learning curves start from the initial model;
- accounting: bytes of array payload each way as the clients would see it (arrays shared by
  the clients of a node count once per client), for training (every message of the round
  before evaluation) and for evaluation apart; failed clients per round;
- history: one record per round (train and evaluation metrics, bytes, failures, seconds),
  handed to an optional ``on_round`` callback as soon as the round ends, so nothing is lost if
  a run dies later.

A subclass writes ``configure_train``/``aggregate_train`` (with :meth:`instructions` and
:meth:`collect`) and two evaluation hooks: ``evaluate_shared`` (the arrays every client
receives) and ``evaluation_metrics`` (client replies -> metrics). Every message carries
``message_config`` (plain scalars) in its "config" record; fedsim's runner puts the experiment
spec there so stateless clients can rebuild their data.
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

from fedsim.protocol import (CLIENT_ARRAYS, CONFIG, PARTITIONS, SHARED, ClientReply, pack_arrays,
                             read_reply)

DISCOVER = f"{MessageType.QUERY}.discover"


class PartitionedStrategy(Strategy):
    """Base strategy: discovery, seeded sampling by partition id, accounting, history.

    Parameters
    ----------
    num_partitions : int
        Number of logical clients (partitions) to sample from.
    num_nodes : int, optional
        Number of nodes hosting them (default: one node per partition).
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

    def __init__(self, *, num_partitions: int, num_nodes: int | None = None,
                 fraction_train: float = 0.1, seed: int = 0, evaluate_every: int = 1,
                 message_config: dict[str, Any] | None = None,
                 on_round: Callable[[dict[str, Any]], None] | None = None,
                 node_wait_timeout: float = 600.0):
        if num_partitions < 1:
            raise ValueError(f"num_partitions = {num_partitions}: expected >= 1")
        if not 0.0 < fraction_train <= 1.0:
            raise ValueError(f"fraction_train = {fraction_train}: expected a value in (0, 1]")
        self.num_partitions = num_partitions
        self.num_nodes = num_nodes or num_partitions
        self.fraction_train = fraction_train
        self.seed = seed
        self.evaluate_every = evaluate_every
        self.message_config = dict(message_config or {})
        self.on_round = on_round
        self.node_wait_timeout = node_wait_timeout
        self.partition_to_node: dict[int, int] = {}
        self.num_rounds = 0
        self.timeout = 3600.0
        self.history: list[dict[str, Any]] = []
        self.bytes = {"up": 0, "down": 0, "eval_up": 0, "eval_down": 0}
        self._addressed: dict[int, list[int]] = {}  # node -> partitions of its last instruction
        self._round: dict[str, Any] = {}
        self._round_start = time.perf_counter()

    # --- hooks for subclasses ------------------------------------------------------------------
    def evaluate_shared(self, arrays: ArrayRecord) -> ArrayRecord:
        """Arrays every client receives for evaluation (default: the global arrays)."""
        return arrays

    def evaluation_metrics(self, replies: list[ClientReply]) -> dict[str, float]:
        """Aggregate the clients' evaluation replies into metrics."""
        raise NotImplementedError

    # --- discovery and sampling ------------------------------------------------------------------
    def connect(self, grid: Grid) -> None:
        """Wait for every node, then learn which partitions each node hosts."""
        deadline = time.monotonic() + self.node_wait_timeout
        while len(nodes := sorted(grid.get_node_ids())) < self.num_nodes:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(nodes)} of {self.num_nodes} nodes registered "
                                   f"within {self.node_wait_timeout:.0f} s")
            time.sleep(0.1)
        config = ConfigRecord({"server-round": 0, **self.message_config})
        asks = [Message(RecordDict({CONFIG: config}), dst_node_id=n, message_type=DISCOVER)
                for n in nodes]
        for reply in grid.send_and_receive(asks, timeout=self.node_wait_timeout):
            if reply.has_error():
                raise RuntimeError(f"node {reply.metadata.src_node_id} failed discovery: "
                                   f"{reply.error.reason}")
            for partition in reply.content.config_records["info"][PARTITIONS]:
                self.partition_to_node[int(partition)] = reply.metadata.src_node_id
        missing = sorted(set(range(self.num_partitions)) - set(self.partition_to_node))
        if missing:
            raise RuntimeError(f"no node hosts partitions {missing[:10]}"
                               f"{'...' if len(missing) > 10 else ''}")

    def sample(self, server_round: int) -> list[int]:
        """Partition ids trained in `server_round`, sorted; reproducible from (seed, round)."""
        count = max(1, int(self.num_partitions * self.fraction_train))
        rng = np.random.default_rng([self.seed, server_round])
        return sorted(int(p) for p in rng.choice(self.num_partitions, count, replace=False))

    # --- messages and accounting -----------------------------------------------------------------
    def instructions(self, message_type: str, server_round: int, partitions: Iterable[int],
                     shared: ArrayRecord | None = None,
                     per_client: dict[int, dict[str, np.ndarray]] | None = None
                     ) -> list[Message]:
        """One message per node hosting any of `partitions`, addressed to those partitions."""
        by_node: dict[int, list[int]] = {}
        for partition in partitions:
            by_node.setdefault(self.partition_to_node[partition], []).append(partition)
        shared_bytes = payload_bytes(shared) if shared is not None else 0
        direction = "eval_down" if message_type == MessageType.EVALUATE else "down"
        messages = []
        for node, addressed in by_node.items():
            records: dict[str, Any] = {CONFIG: ConfigRecord({
                "server-round": server_round, PARTITIONS: addressed, **self.message_config})}
            if shared is not None:
                records[SHARED] = shared
            if per_client is not None:
                records[CLIENT_ARRAYS] = pack_arrays({p: per_client[p] for p in addressed})
                self.bytes[direction] += payload_bytes(records[CLIENT_ARRAYS])
            self.bytes[direction] += shared_bytes * len(addressed)
            self._addressed[node] = addressed
            messages.append(Message(RecordDict(records), dst_node_id=node,
                                    message_type=message_type))
        return messages

    def collect(self, replies: Iterable[Message]) -> list[ClientReply]:
        """Valid per-client replies in partition order; failed clients are counted and logged."""
        clients: list[ClientReply] = []
        for reply in replies:
            if reply.has_error():
                lost = self._addressed.get(reply.metadata.src_node_id, [])
                self._fail(lost, reply.error.reason)
                continue
            evaluation = reply.metadata.message_type == MessageType.EVALUATE
            self.bytes["eval_up" if evaluation else "up"] += payload_bytes(reply.content)
            valid, errors = read_reply(reply.content)
            for partition, reason in errors.items():
                self._fail([partition], reason)
            clients += valid
        return sorted(clients, key=lambda c: c.partition)

    def _fail(self, partitions: list[int], reason: str) -> None:
        self._round["failures"] = self._round.get("failures", 0) + len(partitions)
        log(WARNING, "clients %s failed: %s", partitions[:5], reason.strip().splitlines()[-1:])

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
        return self.instructions(MessageType.EVALUATE, server_round, range(self.num_partitions),
                                 shared=self.evaluate_shared(arrays))

    def aggregate_evaluate(self, server_round: int,
                           replies: Iterable[Message]) -> MetricRecord | None:
        """Evaluation metrics of the round; also closes the round's history record."""
        clients = self.collect(replies)
        metrics = self.evaluation_metrics(clients) if clients else {}
        record = {"round": server_round, **self._round, **metrics,
                  "failures": self._round.get("failures", 0),
                  **{f"bytes_{k}": v for k, v in self.bytes.items()},
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
        log(INFO, "\t%s: %d partitions on %d nodes, fraction_train=%s, seed=%s, "
            "evaluate_every=%s", type(self).__name__, self.num_partitions, self.num_nodes,
            self.fraction_train, self.seed, self.evaluate_every)


def payload_bytes(content: RecordDict | ArrayRecord) -> int:
    """Bytes of serialized array data (what dominates a message's size)."""
    records = [content] if isinstance(content, ArrayRecord) else content.array_records.values()
    return sum(len(array.data) for record in records for array in record.values())
