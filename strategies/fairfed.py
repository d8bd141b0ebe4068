"""FairFed (Ezzeldin et al., AAAI 2023): FedAvg with fairness-aware aggregation weights.

FairFed: Enabling Group Fairness in Federated Learning, https://arxiv.org/abs/2110.00857.
Clients train as in FedAvg (:mod:`clients.fairfed`); the server re-weights their models each
round by how far each client's local fairness metric is from the global one (the paper's
Algorithm 1; cross-checked with DecLearn's implementation, declearn/fairness/fairfed), both
measured on the global model θ^t that the clients received:

    Δ_k   = |F_global − F_k|      (the mean of the other clients' Δ if client k lacks a group)
    ω_k  ← ω_k − β (Δ_k − (1/K) Σ_i Δ_i),   ω_k = n_k / n before round 1
    ω_k  ← ω_k / Σ_i ω_i
    θ^{t+1} = Σ_k ω_k θ_k^{t+1}

so clients whose local metric is close to the global one gain weight; β = 0 is FedAvg. F is
the signed demographic-parity difference P(Ŷ=1 | A=0) − P(Ŷ=1 | A=1) (criterion "dp", the
paper's SPD) or the true-positive-rate difference ("eop", the paper's EOD), F_k on client k's
training rows and F_global on all clients' training rows pooled. The paper obtains F_global
by secure aggregation of per-client terms; here every client reports its confusion counts and
the server pools them, which gives the same number.

Reconstructed or chosen here (the paper is written for one binary attribute and binary labels):
- F is the matrix of rate differences r(a, y) − r(0, y) for every group a ≥ 1 and class y
  (:func:`fairness_metric`), and Δ_k its largest absolute entry of F_global − F_k. For binary
  groups and labels and "dp" this is exactly |SPD_global − SPD_k|; for "eop" it also covers
  the y = 0 class (the TNR difference), as fedsim's "eop" metric does (max over classes).
- ω starts at n_k / n as in the paper (DecLearn starts it at n_k, which divides β's effect by
  n), so β is on the scale of the weights themselves.
- Weights are clipped at 0 before normalising, so the aggregate stays a convex combination:
  with β = 1 and weights near 1/K, a client whose Δ stays above the mean would otherwise reach
  a negative weight within a few rounds; the paper does not say what happens then.
- Every client trains every round (the update compares all clients), whatever ``fraction``. A
  client that fails keeps its weight; the replying clients' weights are renormalised.
- No local debiasing (the paper's optional client-side reweighing, its α).

What the server learns beyond FedAvg: every client's confusion counts per sensitive group of
θ^t on its training rows (the paper's protocol reveals Δ_k and securely aggregated sums).
Messages: as FedAvg; the train reply adds "fairness_counts" [groups, classes, classes].
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Message, MessageType, MetricRecord

from fedsim.messages.common import NUM_EXAMPLES
from fedsim.messages.fairfed import FAIRNESS_COUNTS
from fedsim.metrics.fairness import group_rates
from fedsim.protocol import ClientReply
from strategies.fedavg import FedAvg

CRITERIA = ("dp", "eop")


def fairness_metric(counts: np.ndarray, criterion: str) -> np.ndarray:
    """FairFed's signed metric F from confusion counts [groups, classes, classes]:
    r(a, y) − r(0, y) for groups a ≥ 1 ([groups − 1, classes]; NaN where a group has no rows)."""
    rates = group_rates(counts, criterion)
    return rates[1:] - rates[:1]


def fairfed_update(weights: np.ndarray, counts: list[np.ndarray], beta: float,
                   criterion: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One FairFed step for the clients of `counts` (one confusion tensor per client).

    Returns (new weights clipped at 0, not yet normalised; Δ per client; F_global).
    """
    f_global = fairness_metric(np.sum(counts, axis=0), criterion)
    defined = ~np.isnan(f_global)  # entries the pooled data can measure
    if defined.any():
        local = np.stack([fairness_metric(c, criterion)[defined] for c in counts])
        deltas = np.abs(local - f_global[defined]).max(axis=1)  # NaN: the client lacks a group
    else:
        deltas = np.zeros(len(counts))
    known = ~np.isnan(deltas)
    deltas = np.where(known, deltas, deltas[known].mean() if known.any() else 0.0)
    updated = np.maximum(weights - beta * (deltas - deltas.mean()), 0.0)
    return updated, deltas, f_global


class FairFed(FedAvg):
    """FedAvg whose aggregation weights follow the clients' distance to the global fairness.

    Parameters
    ----------
    beta : float (default: 1.0)
        Step β of the weight update (0 = FedAvg).
    criterion : {"dp", "eop"}
        The tracked fairness metric.
    **kwargs
        Those of :class:`~strategies.base.PartitionedStrategy`.
    """

    extra_reply_arrays = (FAIRNESS_COUNTS,)

    def __init__(self, *, beta: float = 1.0, criterion: str = "dp", **kwargs: Any):
        super().__init__(**kwargs)
        if criterion not in CRITERIA:
            raise ValueError(f"criterion = {criterion!r}: expected one of {CRITERIA}")
        if beta < 0:
            raise ValueError(f"beta = {beta}: expected >= 0")
        self.beta = beta
        self.criterion = criterion
        self.omega = np.full(self.num_partitions, np.nan)  # ω per partition; NaN until seen

    def sample(self, server_round: int) -> list[int]:
        """Every client, every round: the weight update compares all clients' metrics."""
        return list(range(self.num_partitions))

    def check_reply(self, reply: ClientReply) -> str | None:
        problem = super().check_reply(reply)
        if problem is not None or self.phase != MessageType.TRAIN:
            return problem
        counts = reply.arrays.get(FAIRNESS_COUNTS)
        if counts is None or counts.ndim != 3 or counts.shape[1] != counts.shape[2]:
            return f"{FAIRNESS_COUNTS}: expected confusion counts [groups, classes, classes]"
        return None

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        clients = self.collect(replies)
        if not clients:
            return None, None
        ids = [c.partition for c in clients]
        if np.isnan(self.omega[ids]).any():  # first contact: ω_k = n_k / n
            sizes = np.array([c.metrics[NUM_EXAMPLES] for c in clients], dtype=np.float64)
            self.omega[ids] = np.where(np.isnan(self.omega[ids]), sizes / sizes.sum(),
                                       self.omega[ids])
        counts = [c.arrays.pop(FAIRNESS_COUNTS) for c in clients]
        self.omega[ids], deltas, f_global = fairfed_update(self.omega[ids], counts, self.beta,
                                                           self.criterion)
        self.omega /= np.nansum(self.omega)
        arrays, metrics = self.average(clients, weights=self.omega[ids])
        self.record_train({"fairfed_global": float(np.nanmax(np.abs(f_global), initial=0.0)),
                           "fairfed_delta_mean": float(deltas.mean()),
                           "fairfed_weight_min": float(self.omega[ids].min()),
                           "fairfed_weight_max": float(self.omega[ids].max())})
        return arrays, metrics

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "omega": self.omega.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.omega = np.array(state["omega"], dtype=np.float64)
