"""FedFB (Zeng, Chen, Lee 2021): federated FairBatch for demographic parity.

Improving Fairness via Federated Learning, https://arxiv.org/abs/2110.15545. FairBatch-style
reweighting of the sensitive groups' losses: the server keeps weights λ[a, y] per (sensitive
group, label) cell, the clients train with them (:mod:`clients.fedfb`), and after every
aggregation the server moves λ against the pooled group losses of the new global model. The
update below is the authors' code for demographic parity (repository
yzeng58/Improving-Fairness-via-Federated-Learning, FedFB/DP_server.py, ``Server.FedFB``); the
paper's own statement of the update was not available to us, so the code is the reference.

Round t:
1. ``query.group_losses``: every client evaluates the global model θ^t on its training rows and
   replies its rows m_k[a, y] and cross-entropy sums L_k[a, y]; the server pools them (m, L)
   (round 1 uses only m, to start λ).
2. From round 2 on (after each aggregation, as in the authors' loop), one step with
   α_t = step / √(t − 1) (:func:`fedfb_update`):
       r_a = (m[a, 1] − L[a, 1] + L[a, 0]) / m_a   surrogate P(Ŷ=1 | A=a): a loss sum stands in
                                                    for the number of errors
       f_a = r_a − r_0 for groups a ≥ 1
       λ[0, 0] ← λ[0, 0] − α_t Σ_a f_a,   λ[a, 0] ← λ[a, 0] + α_t f_a  (a ≥ 1)
       λ[a, 0] ← clip(λ[a, 0], 0, 2 m_a / n),   λ[a, 1] = 2 m_a / n − λ[a, 0]
   from λ[a, y] = m_a / n (plain ERM). A group predicted positive more often than group 0
   shifts weight to its negatives and group 0 to its positives, which pulls the rates together.
3. Train: row i's loss is scaled by w[a_i, y_i] = λ[a_i, y_i] / (m_{a_i} / n), so w = 1 at the
   start (FedAvg's loss bit for bit); the server averages the models weighted by each client's
   Σ_i w (the authors' ``nc``). ``step = 0`` is FedAvg.

Deviations from the authors' code (noted where it looks like a slip):
- it bounds and refills λ[a, ·] of every group with group 0's 2 m_0 / n, which changes the
  weight of the other groups after the first step; we use each group's own 2 m_a / n;
- it adds the label-rate constant m[0, 0]/m_0 − m[a, 0]/m_a to f_a once per client (N times);
  we add it once, so f_a is exactly the surrogate rate difference above;
- its row weight is λ / m_a with a summed batch loss; ours is n λ / m_a with the batch mean,
  the same loss up to the constant factor batch size / n (which the optimiser's step absorbs
  only for Adam), chosen so that step 0 reproduces FedAvg exactly.
Scope: binary labels and demographic parity (the authors' DP code; FedFB's equal-opportunity
variants are not built). Every client takes part every round, whatever ``fraction`` (the
statistics are pooled over all clients, as in the authors' code).

What the server learns beyond FedAvg: each client's rows per (group, label) and the global
model's loss sums per cell on them, every round.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord
from flwr.serverapp import Grid

from fedsim.messages.common import COUNT_TABLE
from fedsim.messages.fedfb import GROUP_LOSSES, LOSS_TABLE, WEIGHT_SUM, WEIGHTS
from strategies.fedavg import FedAvg


def fedfb_update(lam: np.ndarray, share: np.ndarray, counts: np.ndarray, losses: np.ndarray,
                 step: float) -> tuple[np.ndarray, np.ndarray]:
    """One FedFB step on λ [groups, 2] from pooled rows `counts` and loss sums `losses`
    [groups, 2]; `share` [groups] = m_a / n. Returns (new λ, f [groups − 1])."""
    rate = (counts[:, 1] - losses[:, 1] + losses[:, 0]) / counts.sum(axis=1)
    gaps = rate[1:] - rate[0]
    lam = lam.copy()
    lam[0, 0] -= step * gaps.sum()
    lam[1:, 0] += step * gaps
    lam[:, 0] = np.clip(lam[:, 0], 0.0, 2 * share)
    lam[:, 1] = 2 * share - lam[:, 0]
    return lam, gaps


class FedFB(FedAvg):
    """FedAvg with FairBatch group weights stepped on the server from pooled group losses.

    Parameters
    ----------
    step : float (default: 0.3)
        Step α of the λ update (α / √(t − 1) before round t); 0 = FedAvg.
    **kwargs
        Those of :class:`~strategies.base.PartitionedStrategy`.
    """

    def __init__(self, *, step: float = 0.3, **kwargs: Any):
        super().__init__(**kwargs)
        if step < 0:
            raise ValueError(f"step = {step}: expected >= 0")
        self.step = step
        self.share: np.ndarray | None = None  # m_a / n per group, from the first statistics
        self.lam: np.ndarray | None = None  # λ[a, y]

    def sample(self, server_round: int) -> list[int]:
        """Every client, every round: λ is stepped on statistics pooled over all clients."""
        return list(range(self.num_partitions))

    def group_statistics(self, grid: Grid, server_round: int, arrays: ArrayRecord
                         ) -> tuple[np.ndarray, np.ndarray] | None:
        """Pooled (rows, loss sums) [groups, classes] of the global model; None if no client
        replied validly once λ exists (λ then stays as it is), an error before (λ needs
        them to start)."""
        sums = self.ask_every_client(grid, server_round, GROUP_LOSSES, [COUNT_TABLE, LOSS_TABLE],
                                     counts=[COUNT_TABLE], shape=(None, None), shared=arrays,
                                     required=self.lam is None)
        return None if sums is None else (sums[COUNT_TABLE], sums[LOSS_TABLE])

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        statistics = self.group_statistics(grid, server_round, arrays)
        if self.lam is None:
            self._start(statistics[0])
        elif statistics is not None:
            self.lam, gaps = fedfb_update(self.lam, self.share, *statistics,
                                          self.step / math.sqrt(server_round - 1))
            self.record_train({"fedfb_surrogate_gap": float(np.abs(gaps).max(initial=0.0))})
        weights = self.lam / self.share[:, None]
        self.record_train({"fedfb_weight_min": float(weights.min()),
                           "fedfb_weight_max": float(weights.max())})
        self.expect_model(arrays)
        shared = ArrayRecord({**{k: v for k, v in arrays.items()}, WEIGHTS: Array(weights)})
        return self.instructions(MessageType.TRAIN, server_round, self.sample(server_round),
                                 shared=shared)

    def _start(self, counts: np.ndarray) -> None:
        """λ[a, y] = m_a / n: every row weighs 1, as in FedAvg."""
        groups, classes = counts.shape
        if classes != 2:
            raise ValueError(f"FedFB supports binary labels (the authors' demographic-parity "
                             f"update); the data has {classes} classes")
        rows = counts.sum(axis=1)
        if (rows == 0).any():
            raise ValueError(f"FedFB: sensitive groups {np.flatnonzero(rows == 0).tolist()} "
                             "have no training rows; every group needs rows for its weights")
        self.share = rows / rows.sum()
        self.lam = np.repeat(self.share[:, None], classes, axis=1)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        clients = self.collect(replies)
        return self.average(clients, weights=[c.metrics[WEIGHT_SUM] for c in clients])

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "share": self.share, "lam": self.lam}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.share, self.lam = state["share"], state["lam"]
