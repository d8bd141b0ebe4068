"""The message layout between fedsim strategies and clients: one message per node, many clients.

Cross-device recommendation has thousands of clients; Flower's simulation engine pays a message,
a Ray call and a context copy per node, and its in-memory link state scans every stored message
for every node, so thousands of nodes cost quadratic time. fedsim therefore lets a *node* host
several *logical clients* (partitions): the strategy samples logical clients, groups them by
node, and sends each node one message addressed to its sampled clients. The math stays per
client: each logical client gets its own rows, keeps its own private state and sends its own
upload. With one client per node this is plain Flower.

Before round 1 the strategy asks every node (message type ``query.discover``) which logical
clients it hosts; the reply is ConfigRecord "info" with "partition-ids".

Instruction content:
- ConfigRecord "config": "server-round", "partition-ids" (the addressed logical clients),
  "deadline" (Unix time, server's clock: reply by then; clients not finished by then are
  reported failed, see :mod:`fedsim.app.client_app`), plus the strategy's ``message_config``
  (fedsim's runner puts the experiment spec under "spec" and the run id, which names the
  clients' private-state store, under "run-id");
- ArrayRecord "arrays" (optional): arrays every addressed client receives (e.g. the model);
- ArrayRecord "client-arrays" (optional): per-client arrays, packed by :func:`pack_arrays`.
Reply content:
- ArrayRecord "client-arrays", packed the same way, and MetricRecord "client-metrics": per-client
  metrics, packed by :func:`pack_metrics`;
- ConfigRecord "client-errors": "<partition>" -> reason, for logical clients that failed;
- ConfigRecord "runtime": where the node computed the reply, for observability only (no
  strategy's math reads it): "ray-node" = the Ray node id when a Ray actor ran the ClientApp.

Where the strategy aggregates a phase as a sum, its instructions carry a sum rule ("sum.*" keys
in "config") and the node replies with one checked sum of its clients instead of per-client
arrays and metrics (layout and checks: :mod:`fedsim.node_sums`).

What a method's arrays, metrics and queries are called (the keys inside these records, and the
message types of its queries, "query.<name>") is its message vocabulary, one module per method
in :mod:`fedsim.messages`; a query "query.<name>" is answered by the addressed clients' method
``query_<name>`` (:mod:`fedsim.app.client_app`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MessageType, MetricRecord, RecordDict

DISCOVER = f"{MessageType.QUERY}.discover"
NODE_INFO = "info"  # ConfigRecord of the discovery reply
CONFIG = "config"
SERVER_ROUND = "server-round"
SPEC = "spec"  # in "config", from the runner's message_config
RUN_ID = "run-id"  # likewise
SHARED = "arrays"
CLIENT_ARRAYS = "client-arrays"
CLIENT_METRICS = "client-metrics"
CLIENT_ERRORS = "client-errors"
RUNTIME = "runtime"
PARTITIONS = "partition-ids"
DEADLINE = "deadline"
INDEX = "|index"  # suffix of the key of a packed array's index (pack_arrays)
PARTITIONS_SUFFIX = "|partitions"  # suffix of the key of a packed metric's clients (pack_metrics)


def node_count(requested: int | str, num_clients: int, actors: int | None = None) -> int:
    """Nodes to simulate: `requested` capped at the client count; 0 = one node per client;
    "auto" = twice `actors` (the Ray actors that serve the nodes, default this machine's CPUs:
    a node's message is a batch, and two messages per actor kept both busy in
    benchmarks/README.md's measurements)."""
    if requested == "auto":
        requested = 2 * max(1, actors if actors is not None else os.cpu_count() or 1)
    return num_clients if requested == 0 else min(int(requested), num_clients)


def nodes_for(spec: Mapping, num_clients: int) -> int:
    """:func:`node_count` of a spec: its ``nodes``, with "auto" counting the actors a local Ray
    gives (this machine's CPUs / ``ray.client_cpus``; on a Ray cluster set ``nodes``)."""
    actors = int((os.cpu_count() or 1) / spec["ray.client_cpus"])
    return node_count(spec["nodes"], num_clients, actors)


def hosted_partitions(node_index: int, num_nodes: int, num_clients: int) -> list[int]:
    """Logical clients of node `node_index`: partitions p with p % num_nodes == node_index.

    Round-robin keeps nodes balanced for any sampled subset of clients.
    """
    return list(range(node_index, num_clients, num_nodes))


@dataclass
class ClientReply:
    """What one logical client sent back."""

    partition: int
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


def pack_arrays(per_client: Mapping[int, Mapping[str, np.ndarray]]) -> ArrayRecord:
    """Per-client arrays as two Arrays per (name, dtype, ndim), whatever the number of clients.

    A Flower Array costs about 0.1 ms to build and read back, and a message of a node's
    cross-device clients holds thousands of small per-client arrays; so the arrays of one name
    (and dtype and ndim) are sent as one flat concatenation, key "<name>|<dtype>|<ndim>", with an
    int64 index under that key + "|index": one row per client, (partition, *shape), in the
    order of the concatenation.
    """
    groups: dict[str, list[tuple[int, np.ndarray]]] = {}
    for partition, arrays in per_client.items():
        for name, value in arrays.items():
            value = np.asarray(value)
            groups.setdefault(f"{name}|{value.dtype.str}|{value.ndim}", []).append(
                (partition, value))
    record = {}
    for key, members in groups.items():
        record[key] = Array(np.concatenate([value.ravel() for _, value in members]))
        record[key + INDEX] = Array(np.array([(p, *value.shape) for p, value in members],
                                             dtype=np.int64).reshape(len(members), -1))
    return ArrayRecord(record)


def unpack_arrays(record: ArrayRecord) -> dict[int, dict[str, np.ndarray]]:
    """partition -> name -> array of a record packed by :func:`pack_arrays`.

    Raises ValueError, naming the key, where the record does not follow that layout (an index
    missing or not matching its data), so that a malformed reply fails its node's clients
    instead of the server."""
    out: dict[int, dict[str, np.ndarray]] = {}
    for key in record:
        if key.endswith(INDEX):
            continue
        name, _, ndim = key.rsplit("|", 2) if key.count("|") >= 2 else (key, "", "")
        if key + INDEX not in record or not ndim.isdigit():
            raise ValueError(f"client arrays: {key!r} is not '<name>|<dtype>|<ndim>' with an "
                             f"index under {key + INDEX!r}")
        data, index = record[key].numpy(), record[key + INDEX].numpy()
        if (data.ndim != 1 or index.dtype != np.int64
                or index.shape != (len(index), 1 + int(ndim)) or (index[:, 1:] < 0).any()
                or index[:, 1:].prod(axis=1).sum() != data.size):
            raise ValueError(f"client arrays: the index {key + INDEX!r} does not describe the "
                             f"{data.size} values under {key!r}")
        ends = np.cumsum(index[:, 1:].prod(axis=1))
        for row, start, end in zip(index, ends - index[:, 1:].prod(axis=1), ends):
            out.setdefault(int(row[0]), {})[name] = data[start:end].reshape(row[1:])
    return out


def pack_metrics(per_client: Mapping[int, Mapping[str, float]]) -> MetricRecord:
    """Per-client metrics as one list per name, key "<name>", with the clients' partitions in
    order under "<name>|partitions": a MetricRecord checks every entry it holds, so thousands
    of clients times a score of metrics as scalar entries cost ~35x more to build."""
    groups: dict[str, tuple[list[int], list]] = {}
    for partition, metrics in per_client.items():
        for name, value in metrics.items():
            partitions, values = groups.setdefault(name, ([], []))
            partitions.append(int(partition))
            values.append(value)
    record = {}
    for name, (partitions, values) in groups.items():
        whole = all(isinstance(v, int) and not isinstance(v, bool) for v in values)
        record[name] = [int(v) for v in values] if whole else [float(v) for v in values]
        record[name + PARTITIONS_SUFFIX] = partitions
    return MetricRecord(record)


def unpack_metrics(record: MetricRecord) -> dict[int, dict[str, float]]:
    """partition -> name -> value of a record packed by :func:`pack_metrics`; ValueError, naming
    the key, where the record does not follow that layout."""
    out: dict[int, dict[str, float]] = {}
    for name, values in record.items():
        if name.endswith(PARTITIONS_SUFFIX):
            continue
        partitions = record.get(name + PARTITIONS_SUFFIX)
        if not isinstance(values, list) or not isinstance(partitions, list) \
                or len(partitions) != len(values):
            raise ValueError(f"client metrics: {name!r} is not a list of values with as many "
                             f"partitions under {name + PARTITIONS_SUFFIX!r}")
        for partition, value in zip(partitions, values):
            out.setdefault(int(partition), {})[name] = value
    return out


def reply_content(arrays: Mapping[int, Mapping[str, np.ndarray]],
                  metrics: Mapping[int, Mapping[str, float]],
                  errors: Mapping[int, str], runtime: Mapping[str, str]) -> RecordDict:
    return RecordDict({CLIENT_ARRAYS: pack_arrays(arrays), CLIENT_METRICS: pack_metrics(metrics),
                       CLIENT_ERRORS: ConfigRecord({str(p): r for p, r in errors.items()}),
                       RUNTIME: ConfigRecord(dict(runtime))})


def ray_node(content: RecordDict) -> str | None:
    """The Ray node that computed a reply, or None (not run by Ray, or an older client)."""
    runtime = content.config_records.get(RUNTIME)
    return str(runtime["ray-node"]) if runtime is not None and "ray-node" in runtime else None


def read_reply(content: RecordDict) -> tuple[list[ClientReply], dict[int, str]]:
    """Per-client replies (sorted by partition) and per-client errors of one node's reply."""
    arrays = unpack_arrays(content.array_records[CLIENT_ARRAYS])
    metrics = unpack_metrics(content.metric_records[CLIENT_METRICS])
    errors = {int(p): str(r) for p, r in content.config_records[CLIENT_ERRORS].items()}
    partitions = sorted(set(arrays) | set(metrics))
    return ([ClientReply(p, arrays.get(p, {}), metrics.get(p, {})) for p in partitions], errors)
