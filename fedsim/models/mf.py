"""Matrix factorisation, the backbone of the FedMF baseline: score = <p_u, q_j>.

User and item embeddings of ``factor_dim``, N(0, 0.01²) as NeuMF's; no bias and no dense
layers, so the item table is the whole shared model. Built for a local view, as NeuMF.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fedsim.models.recommender import Recommender


class MF(Recommender):
    USER_TABLES = ("user.weight",)
    ITEM_TABLES = ("item.weight",)
    SHARED_PREFIXES = ("item.",)

    def __init__(self, num_users: int, num_items: int, factor_dim: int = 32):
        super().__init__()
        self.user = nn.Embedding(num_users, factor_dim)
        self.item = nn.Embedding(num_items, factor_dim)
        nn.init.normal_(self.user.weight, std=0.01)
        nn.init.normal_(self.item.weight, std=0.01)

    @classmethod
    def sizes_of(cls, arrays: dict[str, np.ndarray]) -> dict[str, int]:
        return {"factor_dim": arrays["user.weight"].shape[1]}

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Logits for (user row, item row) pairs given as local indices."""
        return (self.user(users) * self.item(items)).sum(-1)

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """Logits of every local item for each of `users`: [len(users), num_items]."""
        return self.user(users) @ self.item.weight.T
