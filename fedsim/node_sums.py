"""Node-level partial aggregation: a node checks each of its clients' replies, then sends their sum.

Where a strategy's aggregation is a (weighted) sum of per-client uploads (FedAvg, FedNCF, FedMF,
FedRecGEL), the sum of a node's clients is a partial sum of the server's: the node can add its
clients' uploads up before anything leaves it and send one sum per message instead of one
upload per logical client, as pfl-research, FedML Parrot and secure aggregation do. The math
is the same sum; only the order in which floating-point terms are added changes (a node adds
its clients in partition order, the server adds the nodes' sums in the order of their first
partition, whatever order they arrive in).

A strategy declares a phase's sum with a :class:`SumRule`, which travels in the instruction's
"config" record (:meth:`SumRule.to_config`). For every addressed client the node then

1. checks the client's reply (:func:`reply_problem`: size, non-finite values and metrics;
   :meth:`SumRule.layout_problem`: exactly the arrays the rule names, each shaped and typed as
   what the client received, the row ids equal to the rows it was sent); a failing client is
   *rejected* and left out of the sum, as the server would have rejected it;
2. turns a valid reply into a sum of one (:meth:`SumRule.one`; weighted by the rule's metric);
3. adds the clients up (:meth:`SumRule.add`).

Client-level DP noise is added by each client before step 1 (fedsim/app/client_app.py), and
failures (errors, injected faults) are reported per client as before.

Reply layout of a summed phase (replacing "client-arrays" / "client-metrics"):

- ArrayRecord "sum-arrays": the summed arrays by name; with row-sparse arrays, the sorted
  union of the clients' row ids under the rule's ``rows`` name and, under ``rows + "|touches"``,
  per row the number of clients whose upload had it (int64);
- MetricRecord "sum-metrics": per metric, the sum over the clients of weight x metric;
- ConfigRecord "sum-info": "partitions" (the clients summed), "weight" (the sum of their
  weights: the number of clients when unweighted), "upload-bytes" (the array bytes the node's
  clients uploaded, rejected ones included: the logical traffic a deployment would carry);
- ConfigRecord "client-errors" (failed clients, as before) and "client-rejected" (clients left
  out by step 1, partition -> reason).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

SUM_ARRAYS = "sum-arrays"
SUM_METRICS = "sum-metrics"
SUM_INFO = "sum-info"
CLIENT_REJECTED = "client-rejected"
TOUCHES = "|touches"
_PREFIX = "sum."  # of the rule's keys in an instruction's "config" record

Arrays = dict[str, np.ndarray]


@dataclass
class Sum:
    """The sum of some clients' replies to one phase.

    ``arrays`` holds the dense sums and the row-sparse sums (rows aligned with ``ids``);
    ``ids`` is the sorted union of the clients' row ids and ``touches`` the number of clients
    whose upload had each row (both None without row-sparse arrays); ``metrics`` the sums of
    weight x metric and ``weight`` the sum of the weights."""

    partitions: list[int]
    arrays: Arrays = field(default_factory=dict)
    ids: np.ndarray | None = None
    touches: np.ndarray | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    weight: float = 0.0

    @property
    def count(self) -> int:
        """Clients in the sum."""
        return len(self.partitions)


def reply_problem(arrays: Mapping[str, np.ndarray], metrics: Mapping[str, float],
                  max_bytes: int) -> str | None:
    """Why one client's reply is malformed whatever the method (too large, non-finite arrays or
    metrics), or None. The server checks per-client replies with it, a node before its sum."""
    size = sum(np.asarray(a).nbytes for a in arrays.values())
    if size > max_bytes:
        return f"{size} bytes of arrays, more than max_reply_bytes = {max_bytes}"
    for name, array in arrays.items():
        if np.asarray(array).dtype.kind == "f" and not np.isfinite(array).all():
            return f"array {name!r} holds non-finite values"
    if any(not math.isfinite(v) for v in metrics.values()):
        return "a metric is not finite"
    return None


@dataclass(frozen=True)
class SumRule:
    """What a node sums for one phase.

    Parameters
    ----------
    dense : names of arrays summed as they are (every client's has the shape it received);
    rows : name of the int64 row-id array keying the row-sparse arrays ("" = none);
    row_arrays : names of arrays whose axis 0 runs over the rows of ``rows`` (their sum is over
        the union of the clients' rows, with per-row counts);
    weight : metric weighting each client (FedAvg's "num-examples"); "" = every client 1, and
        the arrays keep their dtype; weighted sums are float64;
    max_bytes : largest array payload accepted from one client.
    """

    dense: tuple[str, ...] = ()
    rows: str = ""
    row_arrays: tuple[str, ...] = ()
    weight: str = ""
    max_bytes: int = 64 << 20

    # --- the rule in an instruction --------------------------------------------------------
    def to_config(self) -> dict[str, list[str] | str | int]:
        return {_PREFIX + "dense": list(self.dense), _PREFIX + "rows": self.rows,
                _PREFIX + "row-arrays": list(self.row_arrays), _PREFIX + "weight": self.weight,
                _PREFIX + "max-bytes": int(self.max_bytes)}

    @classmethod
    def from_config(cls, config: Mapping) -> "SumRule | None":
        """The rule an instruction carries, or None (the node replies per client)."""
        if _PREFIX + "dense" not in config:
            return None
        return cls(tuple(config[_PREFIX + "dense"]), str(config[_PREFIX + "rows"]),
                   tuple(config[_PREFIX + "row-arrays"]), str(config[_PREFIX + "weight"]),
                   int(config[_PREFIX + "max-bytes"]))

    @property
    def names(self) -> set[str]:
        """Every array a client's reply must hold."""
        return set(self.dense) | set(self.row_arrays) | ({self.rows} if self.rows else set())

    # --- per-client checks -----------------------------------------------------------------
    def layout_problem(self, upload: Mapping[str, np.ndarray], shared: Mapping[str, np.ndarray],
                       own: Mapping[str, np.ndarray]) -> str | None:
        """Why `upload` does not fit what the client received, or None: exactly the rule's
        arrays; row ids equal to the ones the client was sent (``own[rows]``); a dense array
        shaped and typed as the one received (``shared``); a row array with one row per id and
        the received table's row shape and dtype (from ``own``, else ``shared``)."""
        if set(upload) != self.names:
            return (f"arrays {sorted(upload)}, expected {sorted(self.names)}")
        if self.rows:
            ids, sent = np.asarray(upload[self.rows]), own.get(self.rows)
            if ids.dtype != np.int64 or ids.ndim != 1 or sent is None \
                    or not np.array_equal(ids, sent):
                outside = sent is not None and not np.isin(ids, sent).all()
                return f"{self.rows} {'outside' if outside else 'differ from'} the rows the " \
                       "client was sent"
        for name in self.dense:
            got, want = np.asarray(upload[name]), shared.get(name)
            if want is None or got.shape != want.shape or got.dtype != want.dtype:
                return f"{name}: expected {_describe(want)}, got {_describe(got)}"
        for name in self.row_arrays:
            got, table = np.asarray(upload[name]), own.get(name, shared.get(name))
            shape = None if table is None else (len(upload[self.rows]), *table.shape[1:])
            if table is None or got.shape != shape or got.dtype != table.dtype:
                return f"{name}: expected {table.dtype if table is not None else '?'} " \
                       f"{shape}, got {_describe(got)}"
        return None

    def weight_of(self, metrics: Mapping[str, float]) -> float | str:
        """A client's weight, or why its metrics give none."""
        if not self.weight:
            return 1.0
        value = metrics.get(self.weight)
        if value is None or not math.isfinite(value) or value < 0:
            return f"metric {self.weight!r} missing or not a finite weight >= 0"
        return float(value)

    # --- sums ------------------------------------------------------------------------------
    def one(self, partition: int, arrays: Mapping[str, np.ndarray],
            metrics: Mapping[str, float], weight: float | None = None) -> Sum:
        """One client's reply as a sum of one (weighted by ``weight``, default the rule's)."""
        w = self.weight_of(metrics) if weight is None else float(weight)
        if isinstance(w, str):
            raise ValueError(w)
        scale = (lambda a: np.asarray(a)) if not self.weight and weight is None else (
            lambda a: np.asarray(a, np.float64) * w)
        ids = np.asarray(arrays[self.rows]) if self.rows else None
        return Sum([int(partition)],
                   {n: scale(arrays[n]) for n in self.dense + self.row_arrays},
                   ids, None if ids is None else np.ones(len(ids), np.int64),
                   {k: float(v) * w for k, v in metrics.items()}, w)

    def add(self, parts: Sequence[Sum]) -> Sum:
        """The sum of `parts`, added in the given order (dense: term by term from zero; rows:
        one scatter-add over the union of their rows, in the order of the parts)."""
        total = Sum(sorted(p for part in parts for p in part.partitions),
                    weight=float(sum(part.weight for part in parts)))
        for part in parts:
            for name, value in part.metrics.items():
                total.metrics[name] = total.metrics.get(name, 0.0) + value
        for name in self.dense:
            total.arrays[name] = np.zeros_like(parts[0].arrays[name])
            for part in parts:
                total.arrays[name] += part.arrays[name]
        if self.rows:
            ids = np.concatenate([part.ids for part in parts])
            total.ids, where = np.unique(ids, return_inverse=True)
            index = torch.from_numpy(where.reshape(-1).astype(np.int64))
            total.touches = np.bincount(where.reshape(-1), np.concatenate(
                [part.touches for part in parts]), len(total.ids)).astype(np.int64)
            for name in self.row_arrays:
                rows = torch.from_numpy(np.ascontiguousarray(
                    np.concatenate([part.arrays[name] for part in parts])))
                total.arrays[name] = torch.zeros(
                    (len(total.ids), *rows.shape[1:]), dtype=rows.dtype
                ).index_add_(0, index, rows).numpy()
        return total

    def total(self, contributions: Sequence) -> Sum:
        """The sum of the replies a strategy collected: node sums (:class:`Sum`) and per-client
        replies (anything with ``partition``, ``arrays`` and ``metrics``), in partition order."""
        parts = [c if isinstance(c, Sum) else self.one(c.partition, c.arrays, c.metrics)
                 for c in contributions]
        return self.add(sorted(parts, key=lambda s: s.partitions[0]))

    def sum_problem(self, total: Sum, shapes: Mapping[str, tuple[int, ...]]) -> str | None:
        """Why a node's sum is malformed, or None: the rule's arrays and nothing else, finite,
        dense ones of the ``shapes`` the server expects, row arrays over sorted unique row ids
        inside the table (``shapes[name][0]`` rows) with one touch count in [1, clients] each."""
        expected = set(self.dense) | set(self.row_arrays)
        if set(total.arrays) != expected:
            return f"summed arrays {sorted(total.arrays)}, expected {sorted(expected)}"
        if not math.isfinite(total.weight) or total.weight < 0 or any(
                not math.isfinite(v) for v in total.metrics.values()):
            return "a summed metric or the weight is not finite"
        for name, array in total.arrays.items():
            if array.dtype.kind != "f" or not np.isfinite(array).all():
                return f"summed {name!r} is not a finite float array"
        for name in self.dense:
            if total.arrays[name].shape != tuple(shapes[name]):
                return f"summed {name!r} has shape {total.arrays[name].shape}, expected " \
                       f"{tuple(shapes[name])}"
        if self.rows:
            ids, touches = total.ids, total.touches
            if ids is None or touches is None or ids.dtype != np.int64 or ids.ndim != 1 \
                    or touches.shape != ids.shape or touches.dtype != np.int64:
                return f"{self.rows} or their touch counts missing or malformed"
            if len(ids) and (np.any(np.diff(ids) <= 0) or ids[0] < 0 or touches.min() < 1
                             or touches.max() > total.count):
                return f"{self.rows} not sorted and unique, or touch counts outside " \
                       f"[1, {total.count}]"
            for name in self.row_arrays:
                table = tuple(shapes[name])
                if len(ids) and ids[-1] >= table[0]:
                    return f"{self.rows} outside [0, {table[0]})"
                if total.arrays[name].shape != (len(ids), *table[1:]):
                    return f"summed {name!r} has shape {total.arrays[name].shape}, expected " \
                           f"{(len(ids), *table[1:])}"
        return None


def node_sum(rule: SumRule, arrays: Mapping[int, Arrays], metrics: Mapping[int, dict],
             shared: Mapping[str, np.ndarray], owns: Mapping[int, Arrays]
             ) -> tuple[Sum | None, dict[int, str], int]:
    """What a node sends for a summed phase: (the sum of its valid clients' replies, or None if
    none is valid; partition -> why a client was rejected; the array bytes its clients
    uploaded). Clients are checked and added in partition order."""
    if not rule.names and not rule.weight:
        return _metric_sum(arrays, metrics)
    parts, rejected, uploaded = [], {}, 0
    for partition in sorted(arrays):
        upload, values = arrays[partition], metrics.get(partition, {})
        uploaded += sum(np.asarray(a).nbytes for a in upload.values())
        problem = (reply_problem(upload, values, rule.max_bytes)
                   or rule.layout_problem(upload, shared, owns.get(partition, {})))
        weight = rule.weight_of(values)
        problem = problem or (weight if isinstance(weight, str) else None)
        if problem is not None:
            rejected[partition] = problem
            continue
        parts.append(rule.one(partition, upload, values))
    return (rule.add(parts) if parts else None), rejected, uploaded


def _metric_sum(arrays: Mapping[int, Arrays], metrics: Mapping[int, dict]
                ) -> tuple[Sum | None, dict[int, str], int]:
    """:func:`node_sum` of a rule without arrays or weights (the recommenders' evaluation: metric
    sums of thousands of clients a message), checked and added as one table: the same checks
    (no arrays, finite metrics) and sums, added in another order (numpy's)."""
    partitions = sorted(arrays)
    rejected = {p: f"arrays {sorted(arrays[p])}, expected []" for p in partitions if arrays[p]}
    names = sorted({name for p in partitions for name in metrics.get(p, {})})
    table = np.array([[metrics.get(p, {}).get(name, 0.0) for name in names]
                      for p in partitions], dtype=np.float64).reshape(len(partitions), len(names))
    finite = np.isfinite(table).all(axis=1)
    rejected.update({p: "a metric is not finite" for p, ok in zip(partitions, finite)
                     if not ok and p not in rejected})
    keep = np.array([p not in rejected for p in partitions], dtype=bool)
    uploaded = sum(np.asarray(a).nbytes for p in partitions for a in arrays[p].values())
    if not keep.any():
        return None, rejected, uploaded
    sums = table[keep].sum(axis=0)
    total = Sum([p for p, k in zip(partitions, keep) if k],
                metrics={name: float(v) for name, v in zip(names, sums)}, weight=float(keep.sum()))
    return total, rejected, uploaded


def sum_content(rule: SumRule, total: Sum | None, errors: Mapping[int, str],
                rejected: Mapping[int, str], uploaded: int,
                runtime: Mapping[str, str]) -> RecordDict:
    """The reply of a summed phase (layout in the module docstring)."""
    arrays, metrics = {}, {}
    if total is not None:
        arrays = {name: Array(np.ascontiguousarray(value)) for name, value in total.arrays.items()}
        if rule.rows:
            arrays[rule.rows] = Array(total.ids)
            arrays[rule.rows + TOUCHES] = Array(total.touches)
        metrics = dict(total.metrics)
    return RecordDict({
        SUM_ARRAYS: ArrayRecord(arrays), SUM_METRICS: MetricRecord(metrics),
        SUM_INFO: ConfigRecord({"partitions": [] if total is None else total.partitions,
                                "weight": 0.0 if total is None else float(total.weight),
                                "upload-bytes": int(uploaded)}),
        "client-errors": ConfigRecord({str(p): r for p, r in errors.items()}),
        CLIENT_REJECTED: ConfigRecord({str(p): r for p, r in rejected.items()}),
        "runtime": ConfigRecord(dict(runtime))})


def is_sum(content: RecordDict) -> bool:
    return SUM_INFO in content.config_records


def read_sum(rule: SumRule, content: RecordDict
             ) -> tuple[Sum | None, dict[int, str], dict[int, str], int]:
    """(the node's sum or None, failed clients, rejected clients, uploaded bytes) of a summed
    reply; KeyError / ValueError where it does not follow the layout."""
    info = content.config_records[SUM_INFO]
    errors = {int(p): str(r) for p, r in content.config_records["client-errors"].items()}
    rejected = {int(p): str(r) for p, r in content.config_records[CLIENT_REJECTED].items()}
    partitions = [int(p) for p in info["partitions"]]
    if not partitions:
        return None, errors, rejected, int(info["upload-bytes"])
    record = content.array_records[SUM_ARRAYS]
    arrays = {k: v.numpy() for k, v in record.items()}
    ids = touches = None
    if rule.rows:
        ids, touches = arrays.pop(rule.rows), arrays.pop(rule.rows + TOUCHES)
    metrics = {k: float(v) for k, v in content.metric_records[SUM_METRICS].items()}
    return (Sum(partitions, arrays, ids, touches, metrics, float(info["weight"])), errors,
            rejected, int(info["upload-bytes"]))


def _describe(array) -> str:
    return "nothing" if array is None else f"{np.asarray(array).dtype} {tuple(array.shape)}"
