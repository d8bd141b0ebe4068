"""BPR-MF (Rendle et al., UAI 2009) for the centralized methods: score = <e_u, e_i>.

The model returns its whole user and item tables (:meth:`BPRMF.forward`), so a trainer computes
the BPR loss and representation regularizers (AURL) on the same tensors for any backbone; a
graph backbone (:class:`fedsim.models.lightgcn.LightGCN`) overrides only the forward.

Initialisation N(0, 0.1²), LightGCN's (He et al., SIGIR 2020, authors' code ``init_normal``),
used for both backbones so that they differ only in propagation.
"""

from __future__ import annotations

import torch
from torch import nn

INIT_STD = 0.1


class BPRMF(nn.Module):
    def __init__(self, num_users: int, num_items: int, dim: int):
        super().__init__()
        self.user = nn.Embedding(num_users, dim)
        self.item = nn.Embedding(num_items, dim)
        nn.init.normal_(self.user.weight, std=INIT_STD)
        nn.init.normal_(self.item.weight, std=INIT_STD)

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Final user and item representations, [num_users, dim] and [num_items, dim]."""
        return self.user.weight, self.item.weight

    def ego(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The free parameters (layer 0), on which the L2 penalty acts."""
        return self.user.weight, self.item.weight

    def score(self, users: torch.Tensor) -> torch.Tensor:
        """Scores of every item for each of `users` (global ids): [len(users), num_items]."""
        user_emb, item_emb = self()
        return user_emb[users] @ item_emb.T
