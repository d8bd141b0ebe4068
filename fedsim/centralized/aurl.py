"""AURL: group-alignment and global-uniformity regularizers on BPR-MF or LightGCN.

Cai et al., "Mitigating Recommendation Biases via Group-Alignment and Global-Uniformity in
Representation Learning", ACM TIST 2024 (arXiv 2511.13041); no public code. What the paper
confirms: long-tail entities' representations differ from popular ones' (fixed by aligning
the tail distribution to the head's with MMD) and representations collapse (fixed by a
uniformity term with a Gaussian kernel on the sphere), for users and items, on top of a CF
backbone. The loss below is our reconstruction (docs/centralized.md says which parts):

    L = BPR + aurl.l2 * ||ego rows of the batch||² / 2 / B
          + aurl.lambda_ga * [MMD²(tail items, sg head items) + MMD²(inactive users, sg active users)]
          + aurl.lambda_gu * [unif(users) + unif(items)] / 2

over the batch's unique users and items (positives and negatives), L2-normalised final
representations (LightGCN: the layer mean); head items / active users = the top
``data.head_fraction`` by training count. With both lambdas 0 the regularizers are never
computed and no random number is drawn for them, so the run is the plain backbone bit for bit.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from fedsim.centralized.bias_eval import bias_metrics
from fedsim.centralized.bpr import BPRSampler
from fedsim.centralized.representation import cap_rows, group_alignment, uniformity
from fedsim.centralized.trainer import Trainer
from fedsim.data import Interactions
from fedsim.models.bprmf import BPRMF
from fedsim.models.lightgcn import LightGCN, normalized_adjacency


class AURLTrainer(Trainer):
    """BPR with one sampled negative per training pair, plus the AURL regularizers."""

    def __init__(self, spec: Mapping[str, Any], data: Interactions, users: np.ndarray):
        super().__init__(spec, data, users)
        self.sampler = BPRSampler(data, users)
        fraction = spec["data.head_fraction"]
        self.tail_items = torch.from_numpy(~data.head_item_mask(fraction))
        self.inactive_users = torch.from_numpy(~data.active_user_mask(fraction))

    def build_model(self) -> BPRMF:
        sizes = (self.data.num_users, self.data.num_items, self.spec["central.dim"])
        if self.spec["model"] == "lightgcn":
            # The graph of this client's training pairs (all of them with one client).
            adjacency = normalized_adjacency(self.data.num_users, self.data.num_items,
                                             self.sampler.users, self.sampler.items)
            return LightGCN(*sizes, self.spec["lightgcn.layers"], adjacency)
        return BPRMF(*sizes)

    def num_examples(self) -> int:
        return len(self.sampler)

    def train_epoch(self, model: BPRMF, optimizer: torch.optim.Adam,
                    rng: np.random.Generator) -> float:
        losses = []
        for batch in self.sampler.epoch(rng, self.spec["central.batch_size"]):
            users, positives, negatives = (torch.from_numpy(b) for b in batch)
            user_emb, item_emb = model()
            loss = bpr_loss(user_emb, item_emb, users, positives, negatives)
            loss = loss + self.spec["aurl.l2"] * ego_penalty(model, users, positives, negatives)
            if self.regularized:
                loss = loss + self.regularizers(user_emb, item_emb, users,
                                                torch.cat([positives, negatives]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        return float(np.mean(losses))

    @property
    def regularized(self) -> bool:
        """False for the plain backbone (both weights 0): the loss is then BPR + L2 only."""
        return self.spec["aurl.lambda_ga"] != 0 or self.spec["aurl.lambda_gu"] != 0

    def regularizers(self, user_emb: torch.Tensor, item_emb: torch.Tensor,
                     users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """λ_GA · L_GA + λ_GU · L_GU over the batch's unique users and items."""
        lambda_ga, lambda_gu = self.spec["aurl.lambda_ga"], self.spec["aurl.lambda_gu"]
        users, items = torch.unique(users), torch.unique(items)
        z_users = F.normalize(F.embedding(users, user_emb), dim=1)
        z_items = F.normalize(F.embedding(items, item_emb), dim=1)
        total = user_emb.new_zeros(())
        if lambda_ga:
            total = total + lambda_ga * (group_alignment(z_items, self.tail_items[items])
                                         + group_alignment(z_users, self.inactive_users[users]))
        if lambda_gu:
            spread = [uniformity(z, self.spec["aurl.t"])
                      for z in (cap_rows(z_users), cap_rows(z_items)) if len(z) >= 2]
            total = total + lambda_gu * 0.5 * sum(spread)
        return total

    def score(self, model: BPRMF, users: np.ndarray) -> torch.Tensor:
        return model.score(torch.from_numpy(np.asarray(users, dtype=np.int64)))

    def user_embeddings(self, model: BPRMF) -> np.ndarray:
        """The final user representations (LightGCN: the layer mean) of this client's users."""
        with torch.no_grad():
            return model()[0][torch.from_numpy(self.users)].numpy()

    def evaluate_scores(self, scores: torch.Tensor,
                        val_scores: torch.Tensor | None = None) -> dict[str, float]:
        """The base metrics plus @10/@20 per item and user group, PRU and exposure gap
        (:func:`fedsim.centralized.bias_eval.bias_metrics`)."""
        return {**super().evaluate_scores(scores, val_scores),
                **bias_metrics(scores.numpy(), self.data, self.users,
                               self.spec["data.head_fraction"])}


def bpr_loss(user_emb: torch.Tensor, item_emb: torch.Tensor, users: torch.Tensor,
             positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """Mean of -log σ(s(u, i+) - s(u, i-)) over the batch.

    Rows are gathered with ``F.embedding``, not ``table[ids]``: the backward of advanced
    indexing accumulates repeated ids in a thread-dependent order on CPU (measured: the
    gradients differ from run to run with 2 threads), F.embedding's does not."""
    u = F.embedding(users, user_emb)
    margin = ((u * F.embedding(positives, item_emb)).sum(-1)
              - (u * F.embedding(negatives, item_emb)).sum(-1))
    return -F.logsigmoid(margin).mean()


def ego_penalty(model: BPRMF, users: torch.Tensor, positives: torch.Tensor,
                negatives: torch.Tensor) -> torch.Tensor:
    """||e_u||² + ||e_i+||² + ||e_i-||² of the batch's layer-0 rows, / 2 / batch size
    (LightGCN's regularizer, as in the authors' code)."""
    user_ego, item_ego = model.ego()
    squares = (F.embedding(users, user_ego).pow(2).sum()
               + F.embedding(positives, item_ego).pow(2).sum()
               + F.embedding(negatives, item_ego).pow(2).sum())
    return squares / 2 / len(users)
