"""RAID: an in-training defence against attribute inference from user embeddings.

Feng et al., "RAID: An In-Training Defense against Attribute Inference Attacks in Recommender
Systems", arXiv 2504.11510 (no public code). What the paper confirms: the recommendation loss
is the cross-entropy over observed interactions plus sampled negatives; the defence makes the
user-embedding distributions of the attribute classes equal by moving them to a constrained
Wasserstein-2 barycenter with optimal transport; training has two phases; a penalty coefficient
and a centroid-update frequency are its hyperparameters. The rest is our reconstruction
(../shared/research/centralized.md (c); docs/centralized.md says which parts):

    phase 1 (epochs 1..raid.warmup):  L = BCE
    phase 2 (later epochs):           L = BCE + raid.beta * mean_u ||y_u - t_u||^2

- backbone: MF (score <y_u, q_i>, fedsim.models.mf), user rows = this client's users;
- BCE: every training pair once per epoch in a random order, each with ``raid.negatives``
  uniform items that are not training items of the user; batches of ``central.batch_size``
  pairs; the loss is the mean over the batch's positives and negatives;
- t_u: the barycentric projection of y_u onto the W2 barycenter of the classes of
  ``raid.attribute`` (:mod:`fedsim.centralized.transport`), recomputed from the current
  embeddings at the first phase-2 epoch and every ``raid.refresh`` epochs after, held fixed
  (no gradient) in between; it lives in the client's private store between epochs;
- the penalty is the mean over all of the client's users at every step (our choice; the
  brief's per-batch mean is a noisier estimate of the same term, and 943 users cost nothing).

With ``raid.beta = 0`` phase 2 is never entered: no transport is computed and no random number
drawn for it, so the run is the undefended MF bit for bit.

Released embeddings and the baseline defence: the embeddings an attacker sees (and the ranking
uses) are the trained ones plus, with ``raid.noise > 0``, Gaussian noise of standard deviation
raid.noise x the root mean square of their entries, drawn once per run (seeded by ``seed``) and
applied after training: the post-training noise baseline. Evaluation adds the attack scores of
:func:`fedsim.metrics.attribute_inference.attack` on those embeddings as ``attack_{probe}_{score}``
pairs with count 1: they are a property of all users together and do not pool over clients, so
they are meaningful for single-client runs only.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from fedsim.centralized.bpr import BPRSampler
from fedsim.centralized.trainer import Trainer
from fedsim.centralized.transport import alignment_targets
from fedsim.data import Interactions
from fedsim.metrics.attribute_inference import attack
from fedsim.metrics.pooling import count_of
from fedsim.models.mf import MF
from fedsim.spec import SpecError

# Stream tags (with the run seed) of the draws outside the per-round generator.
_NOISE_STREAM = 0x401E


class RAIDTrainer(Trainer):
    """MF trained with BCE over sampled negatives, plus RAID's transport penalty."""

    def __init__(self, spec: Mapping[str, Any], data: Interactions, users: np.ndarray):
        super().__init__(spec, data, users)
        attribute = spec["raid.attribute"]
        if attribute not in data.user_attributes:
            raise SpecError(f"raid.attribute = {attribute!r}: dataset {spec['dataset']!r} has "
                            f"user attributes {sorted(data.user_attributes) or 'none'}")
        self.classes = data.user_attributes[attribute][users]
        self.sampler = BPRSampler(data, users)
        self.row_of = np.full(data.num_users, -1, dtype=np.int64)
        self.row_of[users] = np.arange(len(users))
        self.beta = spec["raid.beta"]
        self.epoch = 0
        self.targets: np.ndarray | None = None

    def build_model(self) -> MF:
        return MF(len(self.users), self.data.num_items, factor_dim=self.spec["central.dim"])

    def num_examples(self) -> int:
        return len(self.sampler)

    # --- training ------------------------------------------------------------------------
    def begin_epoch(self, epoch: int, private: dict[str, np.ndarray]) -> None:
        self.epoch = epoch
        self.targets = private.get("targets")

    def private_state(self) -> dict[str, np.ndarray]:
        return {} if self.targets is None else {"targets": self.targets}

    def defended(self) -> bool:
        """Whether this epoch is in phase 2."""
        return self.beta > 0 and self.epoch > self.spec["raid.warmup"]

    def refresh_due(self) -> bool:
        since = self.epoch - self.spec["raid.warmup"] - 1  # 0 at the first phase-2 epoch
        return self.targets is None or since % self.spec["raid.refresh"] == 0

    def refresh(self, model: MF, rng: np.random.Generator) -> None:
        """New targets from the current user embeddings (the centroid update)."""
        embeddings = model.user.weight.detach().numpy()
        self.targets = alignment_targets(embeddings, self.classes, self.spec["raid.support"],
                                         rng).astype(np.float32)

    def train_epoch(self, model: MF, optimizer: torch.optim.Adam,
                    rng: np.random.Generator) -> float:
        defended = self.defended()
        if defended and self.refresh_due():
            self.refresh(model, rng)
        k = self.spec["raid.negatives"]
        order = rng.permutation(len(self.sampler))
        users, positives = self.sampler.users[order], self.sampler.items[order]
        negatives = self.sampler.negatives(rng, np.repeat(users, k)).reshape(-1, k)
        items = torch.from_numpy(np.concatenate([positives[:, None], negatives], axis=1))
        rows = torch.from_numpy(self.row_of[users])
        labels = torch.zeros(1 + k)
        labels[0] = 1.0
        targets = torch.from_numpy(self.targets) if defended else None
        batch, total = self.spec["central.batch_size"], 0.0
        for start in range(0, len(order), batch):
            b_rows, b_items = rows[start:start + batch], items[start:start + batch]
            logits = model(b_rows[:, None].expand_as(b_items), b_items)
            loss = F.binary_cross_entropy_with_logits(logits, labels.expand_as(logits))
            if defended:
                gap = model.user.weight - targets
                loss = loss + self.beta * gap.square().sum(dim=1).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(b_rows)
        return total / max(len(order), 1)

    # --- released embeddings and evaluation ------------------------------------------------
    def user_embeddings(self, model: MF) -> np.ndarray:
        """The users' embeddings as released: trained rows (+ the baseline's noise)."""
        released = model.user.weight.detach().numpy().copy()
        scale = self.spec["raid.noise"]
        if scale > 0:
            rms = float(np.sqrt(np.mean(np.square(released))))
            rng = np.random.default_rng([self.spec["seed"], _NOISE_STREAM])
            released += rng.normal(0.0, scale * rms, released.shape).astype(np.float32)
        return released

    def score(self, model: MF, users: np.ndarray) -> torch.Tensor:
        released = torch.from_numpy(self.user_embeddings(model)[self.row_of[users]])
        return released @ model.item.weight.detach().T

    def evaluate(self, model: MF) -> dict[str, float]:
        released = self.user_embeddings(model)
        metrics = self.evaluate_scores(torch.from_numpy(released) @ model.item.weight.detach().T)
        scores = attack(released, self.classes, seeds=self.spec["raid.attack_seeds"])
        for name, value in scores.items():
            metrics[f"attack_{name}"] = value
            metrics[count_of(f"attack_{name}")] = 1.0
        return metrics
