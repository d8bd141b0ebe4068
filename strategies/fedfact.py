"""FedFACT post-processing (Zhang et al., NeurIPS 2025, Algorithm 2): fair calibration of FedAvg.

FedFACT: A Provable Framework for Controllable Group-Fairness Calibration in Federated Learning,
https://arxiv.org/abs/2506.03777 (brief: the project's FedFACT research notes, §2.3). The fair
Bayes-optimal personalised classifier is h_k(x, a) = argmax_j (M(a, k)ᵀ η(x))_j, where the cost
matrix M depends on global duals λ (shared) and each client's local duals μ_k (private); see
:mod:`fedsim.fairness.calibration`.

Two stages in one run of ``rounds`` rounds:
1. rounds 1..``pretrain_rounds``: FedAvg (this class *is* :class:`~strategies.fedavg.FedAvg`
   there, same sampling, same client code), giving the score model η̂;
2. the remaining rounds: dual optimisation with every client. Before the first of them the
   server asks every client once (``query.counts``) for its group/label counts n_k[a, y] and
   sums them. Each round it sends the frozen model, λ and the pooled counts; clients update μ_k
   privately and reply ∇_λ Ĥ'_k; the server steps
   λ ← Proj_Λ(λ − s · Σ_k p_k ∇_λ Ĥ'_k), p_k = n_k / n,
   with s = dual_lr (``dual_step="plain"``, the paper's) or, per constraint u = (kind, a', y),
   s_u = dual_lr · P(A=a', Y∈E_u) from the pooled counts (``"scaled"``, ours). A dual moves
   its group's class offsets by Λ_u / p_a', so with a small group the plain step overshoots:
   on Adult with three race groups (one of 4.6% of the rows) it diverges at dual_lr = 0.2. The
   clients' μ_k steps take the same per-cell scaling (:mod:`clients.fedfact`).
Evaluation after stage 1 sends λ and the pooled counts too, and each client evaluates its own
calibrated classifier.

What the one-off count sharing reveals: to the server, every client's table n_k[a, y] (its
number of training rows per sensitive group and label, hence its base rates per group), which
plain FedAvg does not reveal beyond n_k; to every client, the pooled table N[a, y] of the whole
federation. The server only needs the sum, so secure aggregation could hide the per-client
tables (the paper does not say how these statistics are obtained, brief §2.2 note iii).
Variants: "g" (λ only, μ ≡ 0), "l" (μ only, λ ≡ 0), "gl" (both).

Messages of the dual stage (keys: :mod:`fedsim.messages.fedfact`): ``query.counts`` (no
arrays; each client replies "counts" int64 [groups, classes]); train sends the model state dict
plus "fedfact.lambda" [2, U] and "fedfact.pooled_counts" [groups, classes]; each client replies
"grad_lambda" [2, U] (none for variant "l") with metrics "num-examples" and "dual-objective".
:class:`FedFACTStrategy` (the counts and λ) is shared with the in-processing strategy,
:mod:`strategies.fedfact_in`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord
from flwr.serverapp import Grid

from fedsim.fairness.calibration import CRITERIA, cell_shares, project_l1_ball
from fedsim.messages.common import COUNT_TABLE, COUNTS, NUM_EXAMPLES
from fedsim.messages.fedfact import DUAL_OBJECTIVE, GRAD_LAMBDA, LAMBDA, POOLED
from fedsim.protocol import ClientReply
from strategies.fedavg import FedAvg


class FedFACTStrategy(FedAvg):
    """What both FedFACT strategies share: the pooled counts and the global duals λ.

    Parameters
    ----------
    variant : {"g", "l", "gl"} (default: "gl")
        Which constraints are active: global, local or both.
    criterion : {"dp", "eop", "eo"} (default: "dp")
        Fairness criterion (sizes λ: one pair per (kind, group, class)).
    dual_lr : float (default: 0.2)
        Step size of the dual updates.
    bound : float (default: 5.0)
        Radius B_d of the non-negative L1 ball the duals are projected onto (the paper's).
    **kwargs
        Those of :class:`~strategies.base.PartitionedStrategy`.

    Every message carries variant, criterion, dual_lr and bound to the clients
    (:meth:`client_settings`), over the spec's; ξ and the rest of the client side come from the
    spec in ``message_config`` (docs/plugins.md).
    """

    def __init__(self, *, variant: str = "gl", criterion: str = "dp", dual_lr: float = 0.2,
                 bound: float = 5.0, **kwargs: Any):
        super().__init__(**kwargs)
        self.variant = variant
        self.criterion = criterion
        self.dual_lr = dual_lr
        self.bound = bound
        self.pooled: np.ndarray | None = None  # N[a, y], once asked
        self.lam: np.ndarray | None = None  # [2, U] non-negative pairs

    def client_settings(self) -> dict[str, Any]:
        return {**super().client_settings(), "fedfact.variant": self.variant,
                "fedfact.criterion": self.criterion, "fedfact.dual_lr": self.dual_lr,
                "fedfact.bound": self.bound}

    def dual_arrays(self, arrays: ArrayRecord) -> ArrayRecord:
        """The model plus λ and the pooled counts."""
        extra = {LAMBDA: Array(self.lam), POOLED: Array(self.pooled)}
        return ArrayRecord({**{k: v for k, v in arrays.items()}, **extra})

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "pooled": self.pooled, "lam": self.lam}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.pooled, self.lam = state["pooled"], state["lam"]

    def ask_counts(self, grid: Grid, server_round: int) -> None:
        """The one-off ``query.counts`` round: N[a, y] = Σ_k n_k[a, y]; λ starts at 0."""
        self.pooled = self.ask_every_client(grid, server_round, COUNTS, [COUNT_TABLE],
                                            counts=[COUNT_TABLE], shape=(None, None))[COUNT_TABLE]
        groups, classes = self.pooled.shape
        self.lam = np.zeros((2, len(CRITERIA[self.criterion]) * groups * classes))


class FedFACTPost(FedFACTStrategy):
    """FedAvg pre-training, then federated bi-level optimisation of the fairness duals.

    Parameters
    ----------
    pretrain_rounds : int (default: 10)
        FedAvg rounds before the dual stage (the spec key's default).
    dual_step : {"plain", "scaled"} (default: "plain")
        Server step on λ: ``dual_lr`` for every constraint (the paper's), or ``dual_lr`` times
        the pooled share of each constraint's cell (ours; for small groups, see above).
    **kwargs
        Those of :class:`FedFACTStrategy` (``dual_lr`` is the server step on λ).
    """

    def __init__(self, *, pretrain_rounds: int = 10, dual_step: str = "plain", **kwargs: Any):
        super().__init__(**kwargs)
        if dual_step not in ("plain", "scaled"):
            raise ValueError(f"dual_step = {dual_step!r}: expected 'plain' or 'scaled'")
        self.pretrain_rounds = pretrain_rounds
        self.dual_step = dual_step

    def client_settings(self) -> dict[str, Any]:
        return {**super().client_settings(), "fedfact.pretrain_rounds": self.pretrain_rounds}

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        if server_round <= self.pretrain_rounds:
            return super().configure_train(server_round, arrays, config, grid)
        if self.pooled is None:
            self.ask_counts(grid, server_round)
        return self.instructions(MessageType.TRAIN, server_round, range(self.num_partitions),
                                 shared=self.dual_arrays(arrays))

    def check_reply(self, reply: ClientReply) -> str | None:
        """Pre-training: FedAvg's rule; dual stage: a λ gradient shaped like λ (no arrays at all
        for variant "l", whose clients only step their private μ_k)."""
        if self.pooled is None or self.phase != MessageType.TRAIN:
            return super().check_reply(reply)
        if "g" not in self.variant:
            return None if not reply.arrays else f"unexpected arrays {sorted(reply.arrays)}"
        gradient = reply.arrays.get(GRAD_LAMBDA)
        if gradient is None or gradient.shape != self.lam.shape:
            return f"{GRAD_LAMBDA}: expected an array of shape {self.lam.shape}"
        return None

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        if server_round <= self.pretrain_rounds:
            return super().aggregate_train(server_round, replies)
        clients = self.collect(replies)
        if not clients:
            return None, None
        weights = np.array([c.metrics[NUM_EXAMPLES] for c in clients], dtype=np.float64)
        weights /= weights.sum()
        if "g" in self.variant:
            gradient = sum(w * c.arrays[GRAD_LAMBDA] for w, c in zip(weights, clients))
            self.lam = project_l1_ball(self.lam - self.lambda_step() * gradient, self.bound)
        metrics = {"dual_objective": float(sum(w * c.metrics[DUAL_OBJECTIVE]
                                               for w, c in zip(weights, clients))),
                   "lambda_l1": float(self.lam.sum())}
        self.record_train(metrics)
        return None, MetricRecord(metrics)  # the model stays frozen

    def lambda_step(self) -> float | np.ndarray:
        """Step size of the λ update: a scalar, or one per constraint [U] (``dual_step``)."""
        if self.dual_step == "plain":
            return self.dual_lr
        return self.dual_lr * cell_shares(self.pooled, self.criterion)

    def evaluate_shared(self, arrays: ArrayRecord) -> ArrayRecord:
        return arrays if self.pooled is None else self.dual_arrays(arrays)
