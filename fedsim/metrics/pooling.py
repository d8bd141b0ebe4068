"""The one pooling convention of metrics computed on clients.

A client reports a metric as its *sum* over its units (users, rows, attack splits) under the
metric's name and the number of units under ``name + "/n"``. The server adds both over the
clients (or a node adds them first: fedsim/node_sums.py) and divides, so the pooled mean is
exact whatever the client sizes. Every evaluation reply follows it: the recommenders'
leave-one-out metrics (:mod:`fedsim.metrics.leave_one_out`), the centralized trainers' bias
and attack metrics.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

COUNT_SUFFIX = "/n"


def count_of(name: str) -> str:
    """The name a metric's unit count travels under ("hr@10" -> "hr@10/n")."""
    return name + COUNT_SUFFIX


def add(replies: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Every name's total over the replies (metric sums and counts alike)."""
    totals: dict[str, float] = {}
    for reply in replies:
        for name, value in reply.items():
            totals[name] = totals.get(name, 0.0) + float(value)
    return totals


def pooled_means(totals: Mapping[str, float]) -> dict[str, float]:
    """Each metric's pooled mean, sum / count, from the totals of its pair (NaN where no unit
    counted); names without a count are not metrics and are left out."""
    return {name: (total / totals[count_of(name)] if totals[count_of(name)] else math.nan)
            for name, total in totals.items() if count_of(name) in totals}
