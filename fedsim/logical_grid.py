"""Flower's own strategies on fedsim's logical clients: a Grid that shows each client as a node.

Flower's strategies (FedAvg, FedProx, FedAdam, the DP wrappers, ...) sample node ids from
``grid.get_node_ids()``, send every sampled node a Message ("arrays" + "config") and aggregate
one reply per node ("arrays" + "metrics" with "num-examples"). fedsim simulates thousands of
clients as *logical clients* packed onto a few physical nodes, one message per node
(:mod:`fedsim.protocol`). :class:`LogicalGrid` sits between the two, so that a Flower strategy
runs unchanged on fedsim's clients:

- ``get_node_ids()`` returns one virtual node id per logical client (partition), learnt by
  asking every physical node which partitions it hosts (``query.discover``, as
  :class:`strategies.base.PartitionedStrategy` does);
- the messages a strategy sends to virtual nodes are packed into one message per physical node
  (and distinct content): the strategy's arrays become the shared "arrays" every addressed
  client receives, its config keys go into "config" beside "partition-ids", "deadline" and the
  ``message_config`` fedsim's ClientApp needs (the spec JSON and the run id);
- each physical reply is unpacked into one Flower reply per logical client: "arrays" and
  "metrics" (with "num-examples"), or an error reply for a client that failed (raised, missed
  its deadline, was left out of its node's reply, or its whole node failed). Clients whose
  node did not reply in time get no reply, as on any Flower grid;
- ``send_and_receive`` exchanges the packed messages through the physical grid's own
  ``send_and_receive``; ``push_messages`` returns one id per virtual message and
  ``pull_messages`` hands out each client's reply once its node's reply has arrived;
- it counts traffic as the strategies do (``bytes``: what a deployment would send per client;
  ``physical_bytes``: what the simulation moved) and failures (``failures`` per message type,
  ``last_errors`` of the latest exchange).

The boundary with fedsim's own strategies: the adapter always asks for one reply per client,
which is what a Flower strategy aggregates. fedsim's strategies talk to the physical grid
directly (:class:`~strategies.base.PartitionedStrategy`); those that declare a phase's
aggregation a sum (``sum_rule``, e.g. fedsim's FedAvg for training) get one checked partial sum
per node instead (:mod:`fedsim.node_sums`), which no adapter can offer a strategy that reads
each client's reply. Use fedsim's FedAvg where node sums matter (thousands of clients per node);
use this adapter for Flower's strategies, whose per-client replies it reproduces exactly.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from uuid import uuid4

from flwr.app import (Array, ArrayRecord, ConfigRecord, Error, Message, MessageType,
                      MetricRecord, RecordDict)
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid

from fedsim.protocol import (CONFIG, DEADLINE, PARTITIONS, SERVER_ROUND, SHARED,
                             read_reply)
from strategies.base import discover_partitions, payload_bytes, reply_margin

# Virtual node ids are partition + VIRTUAL_ID_BASE: never a partition id and, far above the
# physical ids of an in-process grid, hard to confuse with one.
VIRTUAL_ID_BASE = 1 << 32
REPLY_ARRAYS, REPLY_METRICS = "arrays", "metrics"  # a Flower ClientApp's reply layout


@dataclass
class _Batch:
    """One physical message and the virtual messages (by partition) it carries."""

    message: Message
    clients: dict[int, Message] = field(default_factory=dict)
    answered: bool = False


class LogicalGrid(Grid):
    """A Flower Grid whose nodes are fedsim's logical clients, packed onto `grid`'s nodes.

    Parameters
    ----------
    grid : Grid
        The physical grid (Flower's simulation or deployment grid, or tests/fake_grid.py), its
        nodes running fedsim's ClientApp (``fedsim.app.client_app:app``) or any ClientApp that
        speaks :mod:`fedsim.protocol`.
    num_partitions : int
        Number of logical clients; every one must be hosted by some node.
    num_nodes : int
        Number of physical nodes to wait for before discovery.
    message_config : dict, optional
        Scalars added to every message's "config" (fedsim's ClientApp needs "spec", the
        experiment spec as JSON, and "run-id"), as :class:`PartitionedStrategy` takes them.
    node_wait_timeout : float (default: 600)
        Seconds to wait for the physical nodes to register and answer discovery.
    """

    def __init__(self, grid: Grid, *, num_partitions: int, num_nodes: int,
                 message_config: Mapping[str, Any] | None = None,
                 node_wait_timeout: float = 600.0):
        self.grid = grid
        self.num_partitions = num_partitions
        self.num_nodes = num_nodes
        self.message_config = dict(message_config or {})
        self.node_wait_timeout = node_wait_timeout
        self.partition_to_node: dict[int, int] = {}
        self.bytes = {"up": 0, "down": 0, "eval_up": 0, "eval_down": 0}  # logical
        self.physical_bytes = dict.fromkeys(self.bytes, 0)  # what the simulation moved
        self.failures: dict[str, int] = {}  # message type -> logical clients failed, all calls
        self.last_errors: dict[int, str] = {}  # partition -> reason, of the latest exchange
        # push/pull: physical message id -> its batch, until its reply is pulled; virtual message
        # id -> the physical message carrying it; virtual message id -> its reply, until pulled.
        self._pending: dict[str, _Batch] = {}
        self._carried_by: dict[str, str] = {}
        self._arrived: dict[str, Message] = {}

    # --- virtual nodes -------------------------------------------------------------------------
    @staticmethod
    def node_id(partition: int) -> int:
        """The virtual node id of logical client `partition`."""
        return VIRTUAL_ID_BASE + partition

    def partition(self, node_id: int) -> int:
        """The logical client behind virtual node `node_id`; ValueError for any other id."""
        partition = node_id - VIRTUAL_ID_BASE
        if partition not in self.partition_to_node:
            raise ValueError(f"node {node_id} is not a virtual node of this LogicalGrid (ids "
                             f"{self.node_id(0)} to {self.node_id(self.num_partitions - 1)})")
        return partition

    def get_node_ids(self) -> list[int]:
        """One id per logical client, sorted (so that a seeded ``random`` samples the same
        clients every run); discovers the physical nodes' partitions on the first call."""
        if not self.partition_to_node:
            self.partition_to_node = discover_partitions(
                self.grid, self.num_nodes, self.num_partitions, self.message_config,
                self.node_wait_timeout)
        return [self.node_id(p) for p in sorted(self.partition_to_node)]

    # --- Grid: what is not about virtual nodes goes to the physical grid ------------------------
    def set_run(self, run) -> None:
        self.grid.set_run(run)

    @property
    def run(self):
        return self.grid.run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int,
                       group_id: str, ttl: float | None = None) -> Message:
        self.partition(dst_node_id)  # refuses an id that is not a virtual node
        return Message(content, dst_node_id=dst_node_id, message_type=message_type,
                       group_id=group_id, ttl=ttl)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Pack `messages` (to virtual nodes) and push them on the physical grid; returns the
        virtual messages' ids, whose replies :meth:`pull_messages` returns. (No deadline: a push
        has no timeout to derive one from.)"""
        self.get_node_ids()
        self.last_errors = {}
        batches = self._pack(list(messages), None)
        pushed = set(self.grid.push_messages([b.message for b in batches]))
        ids = []
        for batch in batches:
            # Flower's grids give a message its id as they push it, in its metadata.
            physical_id = batch.message.metadata.message_id
            if physical_id not in pushed:
                self._count_failed(batch, list(batch.clients),
                                   f"the message to node {batch.message.metadata.dst_node_id} "
                                   "could not be pushed")
                continue
            self._pending[physical_id] = batch
            for message in batch.clients.values():
                self._carried_by[message.metadata.message_id] = physical_id
                ids.append(message.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """The replies to pushed virtual messages among `message_ids` that have arrived: a
        physical reply, once pulled, is unpacked for all its clients and kept until asked."""
        wanted = list(dict.fromkeys(message_ids))  # the replies come in the order asked
        physical = {self._carried_by[i] for i in wanted if i in self._carried_by} & set(
            self._pending)
        if physical:
            for reply in self.grid.pull_messages(physical):
                batch = self._pending.pop(reply.metadata.reply_to_message_id, None)
                for client_reply in self._unpack(batch, reply) if batch else []:
                    self._arrived[client_reply.metadata.reply_to_message_id] = client_reply
        out = [self._arrived.pop(i) for i in wanted if i in self._arrived]
        for reply in out:
            del self._carried_by[reply.metadata.reply_to_message_id]
        return out

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> list[Message]:
        """Pack `messages` (to virtual nodes) into physical ones, exchange them on the physical
        grid, and return one reply per logical client whose node replied in time."""
        self.get_node_ids()  # discovery, where a strategy sends before asking for nodes
        self.last_errors = {}
        batches = self._pack(list(messages), timeout)
        replies = self.grid.send_and_receive([b.message for b in batches], timeout=timeout)
        out: list[Message] = []
        for reply in replies:
            batch = next((b for b in batches if not b.answered
                          and b.message.metadata.dst_node_id == reply.metadata.src_node_id
                          and b.message.metadata.message_id
                          == reply.metadata.reply_to_message_id), None)
            if batch is not None:
                batch.answered = True
                out += self._unpack(batch, reply)
        for batch in batches:
            if not batch.answered:  # as on any grid, no reply: the strategy hears nothing
                self._count_failed(batch, list(batch.clients),
                                   f"no reply from node {batch.message.metadata.dst_node_id} "
                                   f"within {timeout} s")
        return out

    # --- packing and unpacking -----------------------------------------------------------------
    def _pack(self, messages: list[Message], timeout: float | None) -> list[_Batch]:
        """One physical message per (node, content, message type): a strategy that sends the
        same RecordDict to all its nodes (Flower's do) costs one message per physical node."""
        groups: dict[tuple[int, int, str], dict[int, Message]] = {}
        for message in messages:
            partition = self.partition(message.metadata.dst_node_id)
            if any(partition in group for group in groups.values()):
                raise ValueError(f"two messages to virtual node {message.metadata.dst_node_id} "
                                 "in one exchange: a client answers one message at a time")
            key = (self.partition_to_node[partition], id(message.content),
                   message.metadata.message_type)
            groups.setdefault(key, {})[partition] = message
            # A sent message gets its id, which its reply refers to, as on Flower's grids.
            message.metadata.__dict__["_message_id"] = str(uuid4())
        deadline = ({DEADLINE: time.time() + timeout - reply_margin(timeout)}
                    if timeout is not None else {})
        batches = []
        for (node, _, kind), clients in groups.items():
            first = next(iter(clients.values()))
            content = self._physical_content(first, {PARTITIONS: list(clients), **deadline})
            batches.append(_Batch(Message(content, dst_node_id=node, message_type=kind,
                                          group_id=first.metadata.group_id), clients))
            if (shared := content.array_records.get(SHARED)) is not None:
                self.bytes[_direction(kind, "down")] += payload_bytes(shared) * len(clients)
                self.physical_bytes[_direction(kind, "down")] += payload_bytes(shared)
        return batches

    def _physical_content(self, message: Message, addressing: dict[str, Any]) -> RecordDict:
        """fedsim's layout of a Flower strategy's content: its one ArrayRecord (any key) as the
        shared "arrays", its one ConfigRecord's keys in "config" beside fedsim's own."""
        content = message.content
        arrays = list(content.array_records.values())
        configs = list(content.config_records.values())
        if len(arrays) > 1 or len(configs) > 1 or content.metric_records:
            raise ValueError(f"message to node {message.metadata.dst_node_id}: records "
                             f"{sorted(content)}; expected at most one ArrayRecord and one "
                             "ConfigRecord (Flower's strategies send 'arrays' and 'config')")
        config = dict(configs[0]) if configs else {}
        own = {PARTITIONS, DEADLINE, *self.message_config}
        if clash := sorted(own & set(config)):
            raise ValueError(f"the strategy's config sets {clash}, which fedsim's messages use "
                             "for addressing and the message_config")
        if SERVER_ROUND not in config:
            raise ValueError(f"message to node {message.metadata.dst_node_id}: its config has "
                             f"no {SERVER_ROUND!r}, which fedsim's clients need (Flower's "
                             "strategies set it)")
        records: dict[str, Any] = {CONFIG: ConfigRecord({**config, **addressing,
                                                         **self.message_config})}
        if arrays:
            records[SHARED] = arrays[0]
        return RecordDict(records)

    def _unpack(self, batch: _Batch, reply: Message) -> list[Message]:
        """One Flower reply per logical client of `batch`, from its node's `reply`."""
        kind = batch.message.metadata.message_type
        if reply.has_error():
            return self._fail(batch, list(batch.clients),
                              f"node {reply.metadata.src_node_id}: {reply.error.reason}")
        self.physical_bytes[_direction(kind, "up")] += payload_bytes(reply.content,
                                                                    physical=True)
        try:
            valid, errors = read_reply(reply.content)
        except (KeyError, ValueError) as malformed:  # not fedsim's reply layout
            return self._fail(batch, list(batch.clients), f"malformed reply: {malformed}")
        out = []
        for client in valid:
            if client.partition not in batch.clients:
                continue  # not asked in this message: nobody waits for it
            content = RecordDict({
                REPLY_ARRAYS: ArrayRecord({k: Array(v) for k, v in client.arrays.items()}),
                REPLY_METRICS: MetricRecord(dict(client.metrics))})
            self.bytes[_direction(kind, "up")] += payload_bytes(content)
            out.append(Message(content, reply_to=batch.clients[client.partition]))
        replied = {c.partition for c in valid}
        left_out = [p for p in batch.clients if p not in replied and p not in errors]
        for partition, reason in errors.items():
            if partition in batch.clients:
                out += self._fail(batch, [partition], reason)
        return out + self._fail(batch, left_out, f"node {reply.metadata.src_node_id}'s reply "
                                                 "left the client out")

    def _fail(self, batch: _Batch, partitions: list[int], reason: str) -> list[Message]:
        """Error replies of `partitions` (Flower's strategies count and log them), counted."""
        self._count_failed(batch, partitions, reason)
        return [Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason),
                        reply_to=batch.clients[p]) for p in partitions]

    def _count_failed(self, batch: _Batch, partitions: list[int], reason: str) -> None:
        if not partitions:
            return
        kind = batch.message.metadata.message_type
        self.failures[kind] = self.failures.get(kind, 0) + len(partitions)
        self.last_errors.update(dict.fromkeys(partitions, reason))


def _direction(message_type: str, way: str) -> str:
    """The traffic counter of a message type and way, as PartitionedStrategy keys them."""
    return f"eval_{way}" if message_type == MessageType.EVALUATE else way
