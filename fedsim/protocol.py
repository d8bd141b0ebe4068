"""The message layout between fedsim strategies and clients: one message per node, many clients.

Cross-device recommendation has thousands of clients; Flower's simulation engine pays a message,
a Ray call and a context copy per node, and its in-memory link state scans every stored message
for every node, so thousands of nodes cost quadratic time. fedsim therefore lets a *node* host
several *logical clients* (partitions): the strategy samples logical clients, groups them by
node, and sends each node one message addressed to its sampled clients. The math stays per
client: each logical client gets its own rows, keeps its own private state and sends its own
upload. With one client per node this is plain Flower.

Instruction content:
- ConfigRecord "config": "server-round", "partition-ids" (the addressed logical clients), plus
  the strategy's ``message_config`` (fedsim puts the experiment spec there);
- ArrayRecord "arrays" (optional): arrays every addressed client receives (e.g. the model);
- ArrayRecord "client-arrays" (optional): per-client arrays, keys "<partition>/<name>".
Reply content:
- ArrayRecord "client-arrays" and MetricRecord "client-metrics": per-client, "<partition>/<name>";
- ConfigRecord "client-errors": "<partition>" -> reason, for logical clients that failed;
- ConfigRecord "runtime": where the node computed the reply, for observability only (no
  strategy's math reads it): "ray-node" = the Ray node id when a Ray actor ran the ClientApp.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

CONFIG = "config"
SHARED = "arrays"
CLIENT_ARRAYS = "client-arrays"
CLIENT_METRICS = "client-metrics"
CLIENT_ERRORS = "client-errors"
RUNTIME = "runtime"
PARTITIONS = "partition-ids"


def node_count(requested: int, num_clients: int) -> int:
    """Nodes to simulate: `requested` capped at the client count; 0 = one node per client."""
    return num_clients if requested == 0 else min(requested, num_clients)


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
    return ArrayRecord({f"{p}/{name}": Array(np.ascontiguousarray(value))
                        for p, arrays in per_client.items() for name, value in arrays.items()})


def unpack_arrays(record: ArrayRecord) -> dict[int, dict[str, np.ndarray]]:
    out: dict[int, dict[str, np.ndarray]] = {}
    for key, value in record.items():
        partition, _, name = key.partition("/")
        out.setdefault(int(partition), {})[name] = value.numpy()
    return out


def pack_metrics(per_client: Mapping[int, Mapping[str, float]]) -> MetricRecord:
    return MetricRecord({f"{p}/{name}": value for p, metrics in per_client.items()
                         for name, value in metrics.items()})


def unpack_metrics(record: MetricRecord) -> dict[int, dict[str, float]]:
    out: dict[int, dict[str, float]] = {}
    for key, value in record.items():
        partition, _, name = key.partition("/")
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
