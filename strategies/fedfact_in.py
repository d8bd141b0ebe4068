"""FedFACT in-processing (Zhang et al., NeurIPS 2025, Algorithm 1): fair personalised training.

Brief §2.2. Every round all clients train the shared model θ and their private personal model
φ_k with a cost-sensitive loss whose cost matrix carries the fairness duals (client side:
:mod:`clients.fedfact_in`). The server averages θ like FedAvg and runs projected dual ascent on
the global duals from the pooled disparity residual:
    λ ← Proj_Λ(λ + dual_lr · (Σ_k g_k − ξ_g, −Σ_k g_k − ξ_g)),
where g_k is client k's share of the global disparity (the shares add up to the global
disparity exactly). The paper's pseudocode sums per-client residuals Σ_k (g_k − ξ_g), which
subtracts ξ_g N times; we use the pooled residual (brief note ii).

Before round 1 the server asks every client once (``query.counts``) for its group/label
counts, as :class:`~strategies.fedfact.FedFACTPost` does (what that reveals: its docstring).
All clients take part in every round (the residual needs every share), whatever ``fraction``.
Messages: train sends θ, λ and the pooled counts; each client replies θ_k and, for variants
with global constraints, "disparity_global" [U]. Evaluation sends θ; each client evaluates its
own ensemble.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord
from flwr.serverapp import Grid

from fedsim.fairness.calibration import project_l1_ball
from fedsim.messages.fedfact import DISPARITY_GLOBAL
from strategies.fedfact import FedFACTStrategy


class FedFACTIn(FedFACTStrategy):
    """FedAvg on θ plus server-side dual ascent on λ.

    Parameters
    ----------
    xi_global : float
        Allowed global disparity ξ_g.
    **kwargs
        Those of :class:`~strategies.fedfact.FedFACTStrategy`.
    """

    extra_reply_arrays = (DISPARITY_GLOBAL,)

    def __init__(self, *, xi_global: float = 0.01, **kwargs: Any):
        super().__init__(**kwargs)
        self.xi_global = xi_global

    def client_settings(self) -> dict[str, Any]:
        return {**super().client_settings(), "fedfact.xi_global": self.xi_global}

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        if self.pooled is None:
            self.ask_counts(grid, server_round)
        self.expect_model(arrays)
        return self.instructions(MessageType.TRAIN, server_round, range(self.num_partitions),
                                 shared=self.dual_arrays(arrays))

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        clients = self.collect(replies)
        shares = [c.arrays.pop(DISPARITY_GLOBAL) for c in clients if DISPARITY_GLOBAL in c.arrays]
        if shares:
            total = np.sum(shares, axis=0)
            residual = np.stack([total - self.xi_global, -total - self.xi_global])
            self.lam = project_l1_ball(self.lam + self.dual_lr * residual, self.bound)
        arrays, metrics = self.average(clients)
        if metrics is not None:
            self.record_train({"lambda_l1": float(self.lam.sum())})
        return arrays, metrics
