"""FedFACT in-processing client: personalised cost-sensitive learning (brief §2.2, Algorithm 1).

Each round, with the shared model θ, the global duals λ and the pooled counts from the server:
1. predictions of the current ensemble h_k = argmax (w_k f_θ + (1 − w_k) f_φk) on the client's
   training rows give its group confusion Ĉ^{a,k}, hence its share g_k of the global
   disparities and its local disparities l_k (:func:`fedsim.fairness.calibration.disparities`);
2. the cost matrices M̄(a, k) = M^{λ,μ}(a, k) + κ with the current duals, κ = −min M + 1e-5 when
   M has a negative entry (else 1e-5; OptFair's shift), so every entry is positive;
3. the mixture weight w_k takes an exponentiated-weights step on the two models' current
   cost-sensitive losses (rate ``fedfact.weight_lr``);
4. local dual ascent μ_k ← Proj(μ_k + step · (l_k − ξ_l, −l_k − ξ_l)) (brief note (i));
5. θ_k (from θ) and the personal φ_k are trained with the loss −Σ_i M̄(a, k)[y, i] log
   softmax(s(x))_i on the same minibatches (``fedavg.*`` epochs, batch size, lr, optimizer);
6. reply θ_k and g_k; the server averages θ and steps λ on the pooled residual Σ_k g_k − ξ_g
   (brief note (ii), not Σ_k (g_k − ξ_g)).
φ_k, w_k and μ_k stay in the node's private state. Evaluation: each client's own ensemble
classifier on its test rows (attribute-blind, Prop. 2).

Our choices: the cost-sensitive loss is :func:`clients.fedavg.local_training`'s cross entropy
with the rows M̄(a_i, k)[y_i, :] as (unnormalised) soft targets, which is exactly the loss
above; φ_k starts as the first θ it sees and w_k at 1/2; the local dual step is preconditioned
(:meth:`clients.fedfact.FedFACTClient._local_dual_step`); output is the last iterate (N_h = 1,
as in the paper's experiments).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from clients.fedavg import local_training
from clients.fedfact import Arrays, FedFACTClient
from fedsim.fairness import calibration as cal
from fedsim.messages.common import NUM_EXAMPLES, TRAIN_LOSS
from fedsim.messages.fedavg import CONFUSION
from fedsim.messages.fedfact import DISPARITY_GLOBAL, LAMBDA, POOLED, PREFIX
from fedsim.metrics import confusion_counts
from fedsim.models import make_classifier

PHI = "phi/"


class FedFACTInClient(FedFACTClient):
    """Shared model θ, private personal model φ_k and mixture weight w_k, trained fairly."""

    def __init__(self, spec: Mapping[str, Any], partition_id: int):
        super().__init__(spec, partition_id)
        self.weight_lr = spec["fedfact.weight_lr"]
        self.personal = make_classifier(spec["model"], self.x.shape[1], self.num_classes,
                                        spec["mlp.hidden"])

    def _private(self, state, theta: Arrays, size: int) -> tuple[Arrays, float, np.ndarray]:
        """(φ_k, w_k, μ_k); on first contact φ_k = θ, w_k = 1/2, μ_k = 0."""
        saved = state.load()
        if saved is None:
            return dict(theta), 0.5, np.zeros((2, size))
        phi = {k[len(PHI):]: v for k, v in saved.items() if k.startswith(PHI)}
        return phi, float(saved["w"][0]), saved["mu"]

    def _probabilities(self, theta: Arrays, phi: Arrays, x: np.ndarray
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        self._load(theta)
        self.personal.load_state_dict({k: torch.tensor(v) for k, v in phi.items()})
        with torch.no_grad():
            inputs = torch.from_numpy(x)
            return torch.softmax(self.model(inputs), 1), torch.softmax(self.personal(inputs), 1)

    def train(self, shared: Arrays, own: Arrays, state, server_round: int
              ) -> tuple[Arrays, dict[str, float]]:
        theta = {k: v for k, v in shared.items() if not k.startswith(PREFIX)}
        lam = np.asarray(shared[LAMBDA], np.float64)
        phi, w, mu = self._private(state, theta, lam.shape[1])
        matrices = self._matrices(shared[POOLED])
        # 1. statistics of the current ensemble's hard predictions, before the local steps
        f_theta, f_phi = self._probabilities(theta, phi, self.x)
        predicted = (w * f_theta + (1 - w) * f_phi).argmax(1).numpy()
        confusion = confusion_counts(self.y, predicted, self.s, self.num_classes, self.num_groups)
        share = cal.disparities(matrices["d_global"].numpy(), confusion)
        local = cal.disparities(matrices["d_local"].numpy(), confusion)
        # 2. cost rows M̄(a_i, k)[y_i, :] with the current duals
        cost = cal.cost_matrix(torch.from_numpy(lam), torch.from_numpy(mu), **matrices).numpy()
        cost = cost + max(0.0, -cost.min()) + 1e-5
        targets = cost[self.s, self.y].astype(np.float32)
        # 3. exponentiated weights on the two models' current losses
        losses = [float(-(targets * np.log(np.clip(f.numpy(), 1e-12, None))).sum(1).mean())
                  for f in (f_theta, f_phi)]
        shared_part = w * np.exp(-self.weight_lr * losses[0])
        w = shared_part / (shared_part + (1 - w) * np.exp(-self.weight_lr * losses[1]))
        # 4. local dual ascent
        if "l" in self.variant:
            residual = np.stack([local - self.xi_local, -local - self.xi_local])
            mu = cal.project_l1_ball(mu + self._local_dual_step(shared[POOLED]) * residual,
                                     self.bound)
        # 5. θ_k and φ_k on the same batches (same seed)
        trained, train_loss = {}, {}
        for name, model, start in (("theta", self.model, theta), ("phi", self.personal, phi)):
            model.load_state_dict({k: torch.tensor(v) for k, v in start.items()})
            train_loss[name] = local_training(
                model, self.x, targets, epochs=self.epochs, lr=self.lr,
                batch_size=self.batch_size, optimizer=self.optimizer,
                seed=[self.seed, self.partition_id, server_round])
            trained[name] = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
        state.save({"mu": mu, "w": np.array([w]),
                    **{PHI + k: v for k, v in trained["phi"].items()}})
        reply = dict(trained["theta"])
        if "g" in self.variant:
            reply[DISPARITY_GLOBAL] = share
        return reply, {NUM_EXAMPLES: len(self.y), TRAIN_LOSS: train_loss["theta"]}

    def evaluate(self, shared: Arrays, own: Arrays, state, server_round: int
                 ) -> tuple[Arrays, dict[str, float]]:
        """Confusion counts per group of this client's ensemble classifier on its test rows."""
        phi, w, _ = self._private(state, shared, 0)
        f_theta, f_phi = self._probabilities(shared, phi, self.x_test)
        predicted = (w * f_theta + (1 - w) * f_phi).argmax(1).numpy()
        counts = confusion_counts(self.y_test, predicted, self.s_test, self.num_classes,
                                  self.num_groups)
        return {CONFUSION: counts}, {NUM_EXAMPLES: len(self.y_test)}
