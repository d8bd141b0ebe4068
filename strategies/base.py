"""The base every fedsim strategy shares: partition-aware, reproducible, accountable, resumable.

Flower's own strategies sample nodes with ``random.sample`` over a set of random node ids, so
client selection cannot be reproduced across runs (../shared/research/flower.md §1.9, §5), and
Flower's round loop cannot resume. :class:`PartitionedStrategy` fixes both and adds what
experiments need:

- logical clients: a node may host several clients (partitions); every message goes to a node
  and addresses a list of its clients (layout in :mod:`fedsim.protocol`);
- discovery: before round 1 it waits until ``num_nodes`` nodes have registered and asks each
  (message type ``query.discover``) which partitions it hosts; clients are then sampled *by
  partition id* with ``default_rng([seed, round])`` and replies are aggregated in partition
  order, so results do not depend on node ids or on how clients are spread over nodes;
- the round loop: Flower's sequence (configure/aggregate train, configure/aggregate evaluate,
  ``evaluate_fn``) preceded by a round-0 evaluation, startable at any round (``start_round``) and
  followed after every round by an optional ``on_checkpoint(round, arrays)`` hook;
- robustness: every phase waits at most ``round_timeout`` seconds, and its instructions carry a
  deadline (that timeout less :func:`reply_margin`) by which each node replies with the clients
  that finished (the others failed: one slow client does not hold up its node's reply, see
  :mod:`fedsim.app.client_app`); clients that fail, time out or
  send a malformed update (non-finite values, wrong shapes, item ids out of range, more than
  ``max_reply_bytes``) are left out and counted (one warning line per round); a training round
  without valid replies, or whose valid replies fall below ``min_replies`` (a fraction of the
  clients asked), does not count: the model stays as it was;
- statistics summed over every client (FedFACT's and EISAM's counts, FedFB's group losses):
  :meth:`ask_every_client` sends a query to every client and returns the sums of the reply
  arrays it names, after rejecting malformed replies (missing, misshapen, counts that are not
  non-negative integers) as any invalid reply is; no valid reply at all is an error naming the
  query;
- node sums: where a subclass declares a phase's aggregation a sum (:meth:`sum_rule`), each
  node checks its clients' replies and sends their sum (:mod:`fedsim.node_sums`); the replies
  the strategy collects are then sums of several clients (:class:`fedsim.node_sums.Sum`), which
  it validates as a whole (:meth:`sum_shapes`) and adds in partition order;
- accounting: bytes of array payload each way as the clients would see it (arrays shared by the
  clients of a node count once per client; a node's sum counts what its clients uploaded), for
  training (every message of the round before evaluation) and for evaluation apart: the
  *logical* traffic of a deployment; and the *physical* bytes the simulation moved (a shared
  array once per message, a node's sum once, packing indices included); ``ray_nodes``, the
  number of distinct Ray nodes whose actors served the round's replies (0 outside Ray), shows
  whether a multi-node cluster is used; it is read from the replies' "runtime" record and never
  enters the math; with an ``accountant`` (client-side DP, :mod:`fedsim.privacy`), one DP
  release per client asked to train and the budget spent so far ("privacy_epsilon" and
  "privacy_releases" in every round's record);
- history: one record per round (train and evaluation metrics, bytes, failures, rejections,
  seconds), handed to an optional ``on_round`` callback as soon as the round ends.

A subclass writes ``configure_train``/``aggregate_train`` (with :meth:`instructions` and
:meth:`collect`), may declare summed phases (:meth:`sum_rule`, :meth:`sum_shapes`), two
evaluation hooks, ``evaluate_shared`` (the arrays every client receives)
and ``evaluation_metrics`` (client replies -> metrics), and may add ``check_reply`` (its own
shape rules) and extend ``state_dict``/``load_state_dict`` (its server state). Every message
carries ``message_config`` (plain scalars) in its "config" record; fedsim's runner puts the
experiment spec there so stateless clients can rebuild their data. A strategy's own settings
that its clients also use (a FedFACT variant, a FedRecGEL mode) travel once: the strategy
declares them as spec keys (:meth:`client_settings`) and every message's config carries them,
over the spec's values (fedsim.app.client_app.message_spec_json), so a ServerApp sets them only
as constructor arguments. ``train_config`` / ``evaluate_config`` given to :meth:`start` go into
every training / evaluation message's config, as Flower's strategies send theirs.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy

from fedsim.node_sums import Sum, SumRule, is_sum, read_sum, reply_problem
from fedsim.privacy import ClientAccountant
from fedsim.protocol import (CLIENT_ARRAYS, CONFIG, DEADLINE, DISCOVER, INDEX, NODE_INFO,
                             PARTITIONS, SERVER_ROUND, SHARED, ClientReply, pack_arrays, ray_node,
                             read_reply)


class PartitionedStrategy(Strategy):
    """Base strategy: discovery, seeded sampling by partition id, robust resumable round loop.

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
    on_checkpoint : callable, optional
        ``on_checkpoint(round, arrays)`` called after every round, once its record is kept.
    round_timeout : float (default: 3600)
        Seconds each phase waits for replies; clients that have not replied by then failed.
    min_replies : float (default: 0)
        Fraction of the clients asked to train whose valid replies a round needs to count.
    max_reply_bytes : int (default: 64 MiB)
        Largest array payload accepted from one logical client in one reply.
    node_wait_timeout : float (default: 600)
        Seconds to wait for all nodes to register before failing.
    accountant : ClientAccountant, optional
        Counts the clients' DP releases (one per client asked to train) and reports the privacy
        budget in every round's record; the clients must apply the matching mechanism.
    node_sums : bool (default: True)
        Ask nodes for one checked sum of their clients' replies in the phases a subclass
        declares summed (:meth:`sum_rule`); False = one reply per client in every phase.
    """

    def __init__(self, *, num_partitions: int, num_nodes: int | None = None,
                 fraction_train: float = 0.1, seed: int = 0, evaluate_every: int = 1,
                 message_config: dict[str, Any] | None = None,
                 on_round: Callable[[dict[str, Any]], None] | None = None,
                 on_checkpoint: Callable[[int, ArrayRecord], None] | None = None,
                 round_timeout: float = 3600.0, min_replies: float = 0.0,
                 max_reply_bytes: int = 64 << 20, node_wait_timeout: float = 600.0,
                 accountant: ClientAccountant | None = None, node_sums: bool = True):
        if num_partitions < 1:
            raise ValueError(f"num_partitions = {num_partitions}: expected >= 1")
        if not 0.0 < fraction_train <= 1.0:
            raise ValueError(f"fraction_train = {fraction_train}: expected a value in (0, 1]")
        if not 0.0 <= min_replies <= 1.0:
            raise ValueError(f"min_replies = {min_replies}: expected a value in [0, 1]")
        self.num_partitions = num_partitions
        self.num_nodes = num_nodes or num_partitions
        self.fraction_train = fraction_train
        self.seed = seed
        self.evaluate_every = evaluate_every
        self.message_config = dict(message_config or {})
        self.on_round = on_round
        self.on_checkpoint = on_checkpoint
        self.round_timeout = round_timeout
        self.min_replies = min_replies
        self.max_reply_bytes = max_reply_bytes
        self.node_wait_timeout = node_wait_timeout
        self.accountant = accountant
        self.node_sums = node_sums
        self.partition_to_node: dict[int, int] = {}
        self.num_rounds = 0
        self.history: list[dict[str, Any]] = []
        self.bytes = {"up": 0, "down": 0, "eval_up": 0, "eval_down": 0}  # logical
        self.physical_bytes = dict.fromkeys(self.bytes, 0)  # what the simulation moved
        self._phase = ""  # message type of the last instructions
        self._start_config: dict[str, ConfigRecord] = {}  # start()'s train/evaluate config
        self._rule: SumRule | None = None  # how nodes sum their replies to it, if they do
        self._tally: Tally | None = None  # what the replies hold, while asking every client
        self._addressed: dict[int, list[int]] = {}  # node -> partitions of its last instruction
        self._round: dict[str, Any] = {}
        self._ray_nodes: set[str] = set()  # Ray nodes that served this round's replies
        self._eval_start = 0.0  # when this round's evaluation phase began
        # This round's failures: kind -> reason pattern -> (first reason, clients)
        self._reasons: dict[str, dict[str, tuple[str, list[int]]]] = {}
        self._round_start = time.perf_counter()

    # --- hooks for subclasses ------------------------------------------------------------------
    def evaluate_shared(self, arrays: ArrayRecord) -> ArrayRecord:
        """Arrays every client receives for evaluation (default: the global arrays)."""
        return arrays

    def evaluation_metrics(self, replies: list[ClientReply]) -> dict[str, float]:
        """Aggregate the clients' evaluation replies into metrics."""
        raise NotImplementedError

    def check_reply(self, reply: ClientReply) -> str | None:
        """Why a client's reply to the current phase is malformed, or None if it is fine."""
        return None

    @property
    def phase(self) -> str:
        """The message type of the instructions whose replies are being read (what a
        ``check_reply`` or ``sum_rule`` of a subclass asks); "" when none is outstanding."""
        return self._phase

    def client_settings(self) -> dict[str, bool | int | float | str]:
        """Spec keys (docs/spec.md) whose value this strategy decides and its clients read, e.g.
        {"fedfact.variant": "gl"}: sent in every message's config, over the spec's. None here."""
        return {}

    def message_config_for(self, message_type: str, **addressing: Any) -> ConfigRecord:
        """A message's "config": start()'s config for its type, ``message_config``, the
        strategy's settings, then the addressing keys (which nothing overrides)."""
        return ConfigRecord({**self._start_config.get(message_type, {}), **self.message_config,
                             **self.client_settings(), **addressing})

    def sum_rule(self, message_type: str) -> SumRule | None:
        """How nodes sum their clients' replies to `message_type` when this strategy's
        aggregation of it is a (weighted) sum, or None (default): per-client replies, for
        strategies that need each client's reply (per-client weights, robust aggregation,
        audits). Its ``max_bytes`` is replaced by ``max_reply_bytes``."""
        return None

    def sum_shapes(self, message_type: str) -> dict[str, tuple[int, ...]]:
        """Shapes the server expects of a node's sum (:meth:`SumRule.sum_problem`): each
        dense array's, and each row array's full table."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Server state a checkpoint needs (subclasses add theirs); node ids are not kept:
        a resumed run discovers its nodes anew."""
        state = {"history": [dict(r) for r in self.history], "bytes": dict(self.bytes),
                 "physical_bytes": dict(self.physical_bytes)}
        if self.accountant is not None:
            state["accountant"] = self.accountant.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = [dict(r) for r in state["history"]]
        self.bytes = dict(state["bytes"])
        self.physical_bytes = dict(state.get("physical_bytes", dict.fromkeys(self.bytes, 0)))
        if self.accountant is not None:
            self.accountant.load_state_dict(state["accountant"])

    # --- discovery and sampling ------------------------------------------------------------------
    def connect(self, grid: Grid) -> None:
        """Wait for every node, then learn which partitions each node hosts."""
        self.partition_to_node = discover_partitions(
            grid, self.num_nodes, self.num_partitions, self.message_config_for(DISCOVER),
            self.node_wait_timeout)

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
        self._phase, self._addressed = (message_type if by_node else ""), by_node
        rule = self.sum_rule(message_type) if self.node_sums else None
        self._rule = rule and dataclasses.replace(rule, max_bytes=self.max_reply_bytes)
        summing = self._rule.to_config() if self._rule is not None else {}
        if message_type == MessageType.TRAIN and self.accountant is not None:
            self.accountant.record(p for addressed in by_node.values() for p in addressed)
        messages = []
        deadline = time.time() + self.round_timeout - reply_margin(self.round_timeout)
        for node, addressed in by_node.items():
            records: dict[str, Any] = {CONFIG: self.message_config_for(message_type, **{
                SERVER_ROUND: server_round, PARTITIONS: addressed, DEADLINE: deadline,
                **summing})}
            if shared is not None:
                records[SHARED] = shared
                self.physical_bytes[direction] += shared_bytes
            if per_client is not None:
                records[CLIENT_ARRAYS] = pack_arrays({p: per_client[p] for p in addressed})
                self.bytes[direction] += payload_bytes(records[CLIENT_ARRAYS])
                self.physical_bytes[direction] += payload_bytes(records[CLIENT_ARRAYS],
                                                                physical=True)
            self.bytes[direction] += shared_bytes * len(addressed)
            messages.append(Message(RecordDict(records), dst_node_id=node,
                                    message_type=message_type))
        return messages

    def exchange(self, grid: Grid, messages: Iterable[Message]) -> list[Message]:
        """Send `messages` and wait at most ``round_timeout`` for their replies."""
        messages = list(messages)
        return list(grid.send_and_receive(messages, timeout=self.round_timeout)) if messages else []

    def collect(self, replies: Iterable[Message]) -> list[ClientReply | Sum]:
        """Valid replies to the last instructions, in partition order: per-client replies, or
        in a summed phase (:meth:`sum_rule`) the nodes' sums of their valid clients.

        Clients that failed, did not reply in time or sent a malformed reply are counted
        ("failures", "rejected") and left out, as are all the clients of a malformed sum; for
        training, fewer valid clients than ``min_replies`` of the clients asked returns none
        (the round does not count).
        """
        if not self._phase:  # nothing outstanding: the phase's instructions were empty
            return []
        clients: list[ClientReply | Sum] = []
        replied: set[int] = set()
        direction = "eval_up" if self._phase == MessageType.EVALUATE else "up"
        for reply in replies:
            node = reply.metadata.src_node_id
            replied.add(node)
            if reply.has_error():
                self._count("failures", self._addressed.get(node, []), reply.error.reason)
                continue
            self.physical_bytes[direction] += payload_bytes(reply.content, physical=True)
            if (served_by := ray_node(reply.content)) is not None:
                self._ray_nodes.add(served_by)
            if self._rule is not None and is_sum(reply.content):
                clients += self._collect_sum(node, reply.content, direction)
                continue
            self.bytes[direction] += payload_bytes(reply.content)
            try:
                valid, errors = read_reply(reply.content)
            except (KeyError, ValueError) as malformed:  # not fedsim's reply layout
                self._count("failures", self._addressed.get(node, []), str(malformed))
                continue
            for partition, reason in errors.items():
                self._count("failures", [partition], reason)
            for client in valid:
                problem = self._problem(client)
                if problem is None:
                    clients.append(client)
                else:
                    self._count("rejected", [client.partition], problem)
        for node in set(self._addressed) - replied:
            self._count("failures", self._addressed[node],
                        f"no reply within round_timeout = {self.round_timeout} s")
        asked = sum(len(p) for p in self._addressed.values())
        phase, self._phase = self._phase, ""
        valid = sum(c.count if isinstance(c, Sum) else 1 for c in clients)
        # No valid reply at all is never a round that counts, whatever min_replies says.
        if phase == MessageType.TRAIN and asked and valid < max(
                1, math.ceil(self.min_replies * asked)):
            self._reasons["skipped"] = {"": (f"only {valid} of {asked} clients replied "
                                             f"validly (min_replies = {self.min_replies})", [])}
            self._round["skipped"] = 1
            return []
        return sorted(clients, key=first_partition)

    def ask_every_client(self, grid: Grid, server_round: int, query: str, arrays: Sequence[str],
                         *, shape: tuple[int | None, ...], counts: Sequence[str] = (),
                         shared: ArrayRecord | None = None, required: bool = True
                         ) -> dict[str, np.ndarray] | None:
        """Ask every client (message type `query`, with `shared` arrays if given) and sum its
        replies: name -> the sum over the valid replies of that array, for every name of `arrays`.

        A valid reply holds every array of `arrays`, all of one shape: `shape`, where a size may
        be None (known only to the clients), and the same for every client (the shape most
        replies have; ties: the first client's); those named in `counts` non-negative integers.
        The rest are rejected and counted like any invalid reply (non-finite values included,
        :func:`fedsim.node_sums.reply_problem`). No valid reply raises RuntimeError naming the
        query and the round's failure reasons, unless not `required` (then None).
        """
        self._tally = Tally(query, tuple(arrays), tuple(shape), tuple(counts))
        try:
            asks = self.instructions(query, server_round, range(self.num_partitions),
                                     shared=shared)
            replies = self._same_shape(self.collect(self.exchange(grid, asks)))
        finally:
            self._tally = None
        if not replies:
            if not required:
                return None
            reasons = [f"{reason} [{kind}]" for kind, patterns in self._reasons.items()
                       for reason, _ in patterns.values()]
            raise RuntimeError(f"{type(self).__name__}: no valid reply to {query} in round "
                               f"{server_round} from the {self.num_partitions} clients asked"
                               + (f": {'; '.join(reasons[:3])}" if reasons else ""))
        return {name: np.sum([reply.arrays[name] for reply in replies], axis=0)
                for name in arrays}

    def _same_shape(self, replies: list[ClientReply]) -> list[ClientReply]:
        """The replies whose arrays have the shape most replies have; the others rejected."""
        name = self._tally.arrays[0]
        shapes = Counter(reply.arrays[name].shape for reply in replies)
        if len(shapes) < 2:
            return replies
        common = shapes.most_common(1)[0][0]
        for reply in replies:
            if reply.arrays[name].shape != common:
                self._count("rejected", [reply.partition],
                            f"{self._tally.query}: {name!r} of shape {reply.arrays[name].shape} "
                            f"where most clients' is {common}")
        return [reply for reply in replies if reply.arrays[name].shape == common]

    def _collect_sum(self, node: int, content: RecordDict, direction: str) -> list[Sum]:
        """A node's sum, checked as a whole; its failed and rejected clients counted."""
        addressed = self._addressed.get(node, [])
        try:
            total, errors, rejected, uploaded = read_sum(self._rule, content)
        except (KeyError, ValueError, TypeError) as malformed:  # not the summed layout
            self._count("failures", addressed, f"sum reply: {malformed!r}")
            return []
        self.bytes[direction] += uploaded
        for kind, partitions in (("failures", errors), ("rejected", rejected)):
            for partition, reason in partitions.items():
                self._count(kind, [partition], reason)
        if total is None:
            return []
        summed = set(total.partitions)
        problem = (f"the sum covers clients {sorted(summed - set(addressed))[:5]} not asked or "
                   "reported failed" if len(summed) != total.count or not summed <= (
                       set(addressed) - set(errors) - set(rejected))
                   else self._rule.sum_problem(total, self.sum_shapes(self._phase)))
        if problem is not None:
            self._count("rejected", total.partitions, f"node sum: {problem}")
            return []
        return [total]

    def _problem(self, reply: ClientReply) -> str | None:
        return (reply_problem(reply.arrays, reply.metrics, self.max_reply_bytes)
                or (self._tally.problem(reply) if self._tally else self.check_reply(reply)))

    def _count(self, kind: str, partitions: list[int], reason: str) -> None:
        """Count failed or rejected clients; the round's one warning line names the reasons
        (:meth:`_warn_round`), not one line per client."""
        self._round[kind] = self._round.get(kind, 0) + len(partitions)
        last_line = (str(reason).strip().splitlines() or ["no reason given"])[-1]
        # Reasons that differ only in numbers (client ids, rounds, sizes) are one reason,
        # shown as its first occurrence.
        self._reasons.setdefault(kind, {}).setdefault(
            re.sub(r"\d+", "N", last_line), (last_line, []))[1].extend(partitions)

    def _warn_round(self, record: dict[str, Any]) -> None:
        """One warning line per round that had failed or rejected clients or did not count:
        the counts and the two commonest reasons, each with some of its clients."""
        parts = []
        for kind, label in (("failures", "failed"), ("rejected", "rejected")):
            reasons = sorted(self._reasons.get(kind, {}).values(), key=lambda r: -len(r[1]))
            if record[kind]:
                parts.append(f"{record[kind]} clients {label} (" + "; ".join(
                    f"{reason} [clients {', '.join(map(str, sorted(clients)[:3]))}"
                    f"{', ...' if len(clients) > 3 else ''}]" for reason, clients in reasons[:2])
                    + (f"; {len(reasons) - 2} other reasons" if len(reasons) > 2 else "") + ")")
        if record["skipped"]:
            parts.append(f"the round does not count: {self._reasons['skipped'][''][0]}")
        if parts:
            log(WARNING, "round %s: %s", record["round"], "; ".join(parts))

    # --- the loop ------------------------------------------------------------------------------
    def start(self, grid: Grid, initial_arrays: ArrayRecord, num_rounds: int = 3,
              timeout: float | None = None, train_config: ConfigRecord | None = None,
              evaluate_config: ConfigRecord | None = None,
              evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
              *, start_round: int = 0) -> Result:
        """Discover partitions, evaluate round 0, then run rounds ``start_round + 1`` to
        ``num_rounds``; to resume, load the state first and pass the checkpoint's arrays.

        `timeout` (Flower's argument) overrides ``round_timeout`` when given.
        """
        self.num_rounds = num_rounds
        if timeout is not None:
            self.round_timeout = timeout
        train_config = train_config or ConfigRecord()
        evaluate_config = evaluate_config or ConfigRecord()
        self._start_config = {MessageType.TRAIN: train_config,
                              MessageType.EVALUATE: evaluate_config}
        if not self.partition_to_node:
            self.connect(grid)
        result = Result()
        arrays = result.arrays = initial_arrays
        self._round_start = time.perf_counter()
        if start_round == 0:
            self._eval_start = time.perf_counter()
            self.aggregate_evaluate(0, self.exchange(
                grid, self.configure_evaluate(0, arrays, evaluate_config, grid)))
        for server_round in range(start_round + 1, num_rounds + 1):
            replies = self.exchange(grid, self.configure_train(server_round, arrays,
                                                               train_config, grid))
            new_arrays, train_metrics = self.aggregate_train(server_round, replies)
            if new_arrays is not None:
                arrays = result.arrays = new_arrays
            if train_metrics is not None:
                result.train_metrics_clientapp[server_round] = train_metrics
            self._eval_start = time.perf_counter()
            metrics = self.aggregate_evaluate(server_round, self.exchange(
                grid, self.configure_evaluate(server_round, arrays, evaluate_config, grid)))
            if metrics is not None:
                result.evaluate_metrics_clientapp[server_round] = metrics
            if evaluate_fn is not None and (served := evaluate_fn(server_round, arrays)):
                result.evaluate_metrics_serverapp[server_round] = served
            if self.on_checkpoint is not None:
                self.on_checkpoint(server_round, arrays)
        return result

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
                  "rejected": self._round.get("rejected", 0),
                  "skipped": self._round.get("skipped", 0),
                  **{f"bytes_{k}": v for k, v in self.bytes.items()},
                  **{f"physical_bytes_{k}": v for k, v in self.physical_bytes.items()},
                  "ray_nodes": len(self._ray_nodes),
                  **(self.accountant.metrics() if self.accountant is not None else {}),
                  **self._phase_seconds(server_round),
                  "round_seconds": time.perf_counter() - self._round_start}
        self.history.append(record)
        self._warn_round(record)
        if self.on_round is not None:
            self.on_round(record)
        if metrics:
            log(INFO, "round %s: %s", server_round,
                ", ".join(f"{k}={v:.4f}" for k, v in list(metrics.items())[:4]))
        self._round, self._ray_nodes, self._reasons = {}, set(), {}
        self._round_start = time.perf_counter()
        return MetricRecord(metrics) if metrics else None

    def _phase_seconds(self, server_round: int) -> dict[str, float]:
        """Wall seconds of the round's training phase (row requests included) and of its
        evaluation phase, as the server sees them."""
        now, evaluation = time.perf_counter(), max(self._eval_start, self._round_start)
        return {**({"train_seconds": evaluation - self._round_start} if server_round else {}),
                "eval_seconds": now - evaluation}

    def summary(self) -> None:
        log(INFO, "\t%s: %d partitions on %d nodes, fraction_train=%s, seed=%s, "
            "evaluate_every=%s", type(self).__name__, self.num_partitions, self.num_nodes,
            self.fraction_train, self.seed, self.evaluate_every)


@dataclasses.dataclass(frozen=True)
class Tally:
    """What every client's reply to a query of :meth:`PartitionedStrategy.ask_every_client`
    holds: the arrays `arrays`, of one `shape` (None: any size), `counts` of them non-negative
    integers."""

    query: str
    arrays: tuple[str, ...]
    shape: tuple[int | None, ...]
    counts: tuple[str, ...] = ()

    def problem(self, reply: ClientReply) -> str | None:
        """Why one client's reply is not such a reply, or None (the same shape across clients
        is checked once all have replied)."""
        for name in self.arrays:
            value = reply.arrays.get(name)
            if value is None:
                return f"{self.query}: no array {name!r} in the reply"
            expected = "x".join("*" if size is None else str(size) for size in self.shape)
            if len(value.shape) != len(self.shape) or any(
                    size is not None and size != got for size, got in zip(self.shape, value.shape)):
                return (f"{self.query}: {name!r} of shape {value.shape}, expected "
                        f"{len(self.shape)}-d ({expected})")
            if value.shape != reply.arrays[self.arrays[0]].shape:
                return f"{self.query}: {name!r} and {self.arrays[0]!r} differ in shape"
            if name in self.counts and (value.dtype.kind not in "iu" or (value < 0).any()):
                return (f"{self.query}: {name!r} must hold non-negative integer counts "
                        f"(got dtype {value.dtype}, min {value.min() if value.size else None})")
        return None


def discover_partitions(grid: Grid, num_nodes: int, num_partitions: int,
                        message_config: Mapping[str, Any], timeout: float) -> dict[int, int]:
    """partition -> physical node id: wait (at most `timeout` s) until `num_nodes` nodes have
    registered, ask each which partitions it hosts, and check that all `num_partitions` are."""
    deadline = time.monotonic() + timeout
    while len(nodes := sorted(grid.get_node_ids())) < num_nodes:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(nodes)} of {num_nodes} nodes registered "
                               f"within {timeout:.0f} s")
        time.sleep(0.1)
    config = ConfigRecord({SERVER_ROUND: 0, **message_config})
    asks = [Message(RecordDict({CONFIG: config}), dst_node_id=n, message_type=DISCOVER)
            for n in nodes]
    hosts = {}
    for reply in grid.send_and_receive(asks, timeout=timeout):
        if reply.has_error():
            raise RuntimeError(f"node {reply.metadata.src_node_id} failed discovery: "
                               f"{reply.error.reason}")
        for partition in reply.content.config_records[NODE_INFO][PARTITIONS]:
            hosts[int(partition)] = reply.metadata.src_node_id
    missing = sorted(set(range(num_partitions)) - set(hosts))
    if missing:
        raise RuntimeError(f"no node hosts partitions {missing[:10]}"
                           f"{'...' if len(missing) > 10 else ''}")
    return hosts


def reply_margin(round_timeout: float) -> float:
    """Seconds of ``round_timeout`` kept for a node's reply to reach the server (summing,
    packing, transfer): 5%, at least 2 s, at most a quarter (a 4 s timeout gives the nodes a
    3 s deadline, 8 s one of 6 s, an hour one of 57 min)."""
    return min(max(2.0, 0.05 * round_timeout), 0.25 * round_timeout)


def payload_bytes(content: RecordDict | ArrayRecord, physical: bool = False) -> int:
    """Bytes of array values (what dominates a message's size). Serialization headers are left
    out, and so, unless `physical`, is the index of packed per-client arrays
    (:func:`fedsim.protocol.pack_arrays`), so that the count does not depend on how clients are
    spread over nodes."""
    records = [content] if isinstance(content, ArrayRecord) else content.array_records.values()
    return sum(np.dtype(array.dtype).itemsize * math.prod(array.shape)
               for record in records for key, array in record.items()
               if physical or not key.endswith(INDEX))


def first_partition(reply: ClientReply | Sum) -> int:
    """The order replies are aggregated in: by (first) partition."""
    return reply.partitions[0] if isinstance(reply, Sum) else reply.partition
