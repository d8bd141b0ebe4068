"""FedFACT clients' shared part, and the post-processing client (brief §2.3).

:class:`FedFACTClient` holds what both FedFACT clients need: the client's group/label counts
(the one-off "query.counts" reply), its constraint matrices from its own and the pooled counts,
and the step size of its local duals. The in-processing client is in :mod:`clients.fedfact_in`.

:class:`FedFACTPostClient`: FedAvg pre-training, then private local duals.

Two stages, told apart by the round number (both sides know ``fedfact.pretrain_rounds``):
- rounds 1..pretrain_rounds: plain FedAvg local training (:class:`clients.fedavg.FedAvgClient`);
- later rounds: the bi-level dual optimisation of Algorithm 2 on the frozen model's scores
  η̂(x) = softmax(model(x)) over the client's training rows. The client takes ``local_steps``
  projected gradient steps on its local duals μ_k (variants "l", "gl") and replies the gradient
  of its smoothed objective Ĥ'_k in the global duals λ (variants "g", "gl").
Evaluation with λ in the shared arrays predicts with the attribute-aware calibrated classifier
argmax_j (M(a, k)ᵀ η̂(x))_j of this client (Thm. 5): a personalised classifier per client. With
``fedfact.smoothing = "logsumexp"`` (the authors' OptFair code) the dual objective smooths the
max by β·logsumexp(·/β) and the classifier is randomised, P(Ŷ=j | x, a) = softmax((M(a, k)ᵀ
η̂(x)) / β)_j; its evaluation replies its expected confusion counts (the mean over draws of its
labels), and at stationary duals it meets the constraints exactly on the training rows.

μ_k lives in the node's private state and never enters a reply; only ∇_λ goes up.
Our choices (not fixed by the paper): η̂ is the FedAvg score with per-(group, client) class
offsets fitted on the client's training rows (``fedfact.group_calibration``; LoGoFair fits a
Beta calibration per group), because the label-based criteria need η(x, a, k); μ_k keeps its value across rounds
(warm start); the first post-processing round starts from λ = μ = 0; the μ_k steps are
preconditioned (:meth:`FedFACTClient._local_dual_step`), the server's λ steps are plain.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from clients.fedavg import FedAvgClient
from fedsim.fairness import calibration as cal
from fedsim.federation import load_federation
from fedsim.messages.common import COUNT_TABLE, NUM_EXAMPLES
from fedsim.messages.fedavg import CONFUSION
from fedsim.messages.fedfact import DUAL_OBJECTIVE, GRAD_LAMBDA, LAMBDA, POOLED, PREFIX
from fedsim.metrics import expected_confusion_counts

Arrays = dict[str, np.ndarray]


class FedFACTClient(FedAvgClient):
    """What both FedFACT clients share: group/label counts, constraint matrices, local duals."""

    def __init__(self, spec: Mapping[str, Any], partition_id: int):
        super().__init__(spec, partition_id)
        federation = load_federation(spec)
        self.s = federation.dataset.s_train[federation.train_parts[partition_id]]
        self.variant = spec["fedfact.variant"]
        self.criterion = spec["fedfact.criterion"]
        self.xi_global = spec["fedfact.xi_global"]
        self.xi_local = spec["fedfact.xi_local"]
        self.bound = spec["fedfact.bound"]
        self.dual_lr = spec["fedfact.dual_lr"]

    def group_label_counts(self) -> np.ndarray:
        """n_k[a, y] of the training rows, int64 [groups, classes]."""
        flat = self.s * self.num_classes + self.y
        counts = np.bincount(flat, minlength=self.num_groups * self.num_classes)
        return counts.reshape(self.num_groups, self.num_classes).astype(np.int64)

    def query_counts(self, shared: Arrays, own: Arrays, state, server_round: int
                     ) -> tuple[Arrays, dict[str, float]]:
        """The reply to the server's one-off ``query.counts``: n_k[a, y]."""
        return {COUNT_TABLE: self.group_label_counts()}, {}

    def _matrices(self, pooled: np.ndarray) -> dict[str, torch.Tensor]:
        """This client's constraint matrices and group shares p_{a,k} (brief §1.3)."""
        own = self.group_label_counts()
        d_global, d_local = cal.constraint_matrices(own, pooled, self.criterion)
        return {"d_global": torch.from_numpy(d_global), "d_local": torch.from_numpy(d_local),
                "group_share": torch.from_numpy(own.sum(1) / pooled.sum())}

    def _local_dual_step(self, pooled: np.ndarray) -> np.ndarray:
        """Step size per local constraint for a step along the local disparity: [U] (ours).

        A step on ν_k = μ_k / p_k (whose gradient is the local disparity itself, not 1/p_k
        times it), scaled per constraint by the share of the client's rows in its cell
        (a', E). The paper's plain step moves the thresholds ∝ 1/(p_k p_{a',E,k}) and
        oscillates on small clients and small groups.
        """
        client_share = len(self.y) / float(pooled.sum())
        return self.dual_lr * client_share * cal.cell_shares(self.group_label_counts(),
                                                              self.criterion)

    def _mu(self, state, size: int) -> np.ndarray:
        saved = state.load()
        return saved["mu"] if saved is not None else np.zeros((2, size))


class FedFACTPostClient(FedFACTClient):
    """A FedAvg client that, after pre-training, calibrates its predictions with dual variables."""

    def __init__(self, spec: Mapping[str, Any], partition_id: int):
        super().__init__(spec, partition_id)
        self.pretrain_rounds = spec["fedfact.pretrain_rounds"]
        self.beta = spec["fedfact.beta"]
        self.smoothing = spec["fedfact.smoothing"]
        self.local_steps = spec["fedfact.local_steps"]
        choice = spec["fedfact.group_calibration"]
        self.group_calibration = choice == "on" or (choice == "auto" and self.criterion != "dp")

    def _problem(self, shared: Arrays, x: np.ndarray, s: np.ndarray) -> dict[str, Any]:
        """Scores η̂ of rows x, their groups, and this client's constraint matrices and shares.

        With ``fedfact.group_calibration`` the model's log-scores get per-group class offsets
        fitted on the client's training rows (:func:`cal.group_prior_shift`).
        """
        self._load({k: v for k, v in shared.items() if not k.startswith(PREFIX)})
        with torch.no_grad():
            log_scores = torch.log_softmax(self.model(torch.from_numpy(x)).double(), dim=1)
            if self.group_calibration:
                train = torch.log_softmax(self.model(torch.from_numpy(self.x)).double(), dim=1)
                offsets = cal.group_prior_shift(train.numpy(), self.s, self.group_label_counts())
                log_scores = log_scores + torch.from_numpy(offsets)[torch.from_numpy(s)]
        return {"eta": torch.softmax(log_scores, dim=1), "groups": torch.from_numpy(np.asarray(s)),
                **self._matrices(shared[POOLED])}

    def train(self, shared: Arrays, own: Arrays, state, server_round: int
              ) -> tuple[Arrays, dict[str, float]]:
        if server_round <= self.pretrain_rounds:
            return super().train(shared, own, state, server_round)
        problem = self._problem(shared, self.x, self.s)
        lam = torch.from_numpy(np.asarray(shared[LAMBDA], np.float64))
        mu = self._mu(state, lam.shape[1])
        client_share = len(self.y) / float(shared[POOLED].sum())  # p_k

        def objective(lam_t: torch.Tensor, mu_t: torch.Tensor) -> torch.Tensor:
            return cal.client_objective(lam_t, mu_t, **problem, client_share=client_share,
                                        xi_global=self.xi_global, xi_local=self.xi_local,
                                        beta=self.beta, smoothing=self.smoothing)

        if "l" in self.variant:
            # ∇_μ Ĥ'_k is 1/p_k times the local disparity: one more p_k gives the ν_k step.
            step = client_share * self._local_dual_step(shared[POOLED])
            for _ in range(self.local_steps):
                mu_t = torch.from_numpy(mu).requires_grad_()
                (grad,) = torch.autograd.grad(objective(lam, mu_t), mu_t)
                mu = cal.project_l1_ball(mu - step * grad.numpy(), self.bound)
            state.save({"mu": mu})
        lam_t = lam.clone().requires_grad_()
        value = objective(lam_t, torch.from_numpy(mu))
        metrics = {NUM_EXAMPLES: len(self.y), DUAL_OBJECTIVE: value.item()}
        if "g" not in self.variant:
            return {}, metrics
        (grad,) = torch.autograd.grad(value, lam_t)
        return {GRAD_LAMBDA: grad.numpy()}, metrics

    def evaluate(self, shared: Arrays, own: Arrays, state, server_round: int
                 ) -> tuple[Arrays, dict[str, float]]:
        """Plain FedAvg evaluation before the duals exist; calibrated predictions after."""
        if LAMBDA not in shared:
            return super().evaluate(shared, own, state, server_round)
        probabilities = self.predict_proba(shared, state, self.x_test, self.s_test)
        counts = expected_confusion_counts(self.y_test, probabilities, self.s_test,
                                           self.num_classes, self.num_groups)
        if self.smoothing == "softmax":  # one-hot predictions: exact integer counts
            counts = np.rint(counts).astype(np.int64)
        return {CONFUSION: counts}, {NUM_EXAMPLES: len(self.y_test)}

    def predict_proba(self, shared: Arrays, state, x: np.ndarray, s: np.ndarray) -> np.ndarray:
        """P(Ŷ=j | row) [rows, classes] of this client's calibrated classifier (duals λ from
        `shared`, μ_k from `state`) on rows x with groups s; one-hot for the deterministic one."""
        problem = self._problem(shared, x, s)
        lam = torch.from_numpy(np.asarray(shared[LAMBDA], np.float64))
        cost = cal.cost_matrix(lam, torch.from_numpy(self._mu(state, lam.shape[1])),
                               problem["d_global"], problem["d_local"], problem["group_share"])
        scores = cal.calibrated_scores(problem["eta"], problem["groups"], cost)
        return cal.prediction_probabilities(scores, self.beta, self.smoothing).numpy()
