"""NeuMF (He et al., WWW 2017), the backbone of FedNCF and FedRecGEL.

Sizes and initialisation follow the FedRecGEL authors' code (../shared/research/fedrecgel.md
§1.2): GMF embeddings of ``factor_dim``, MLP embeddings of ``factor_dim * 2**(layers-1)``, an MLP
tower that halves the width at each layer, a 1-unit head over [GMF ; MLP]; embeddings
N(0, 0.01²), tower Xavier-uniform, head Kaiming-uniform (a=1, 'sigmoid'), biases 0.

The module is built for a *local view*: ``num_users`` rows of user embeddings (the users a
client holds) and ``num_items`` rows of item embeddings (the item rows the server sent). The
server never builds the user tables; clients never hold the full item table during training.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fedsim.models.recommender import Recommender


class NeuMF(Recommender):
    USER_TABLES = ("user_gmf.weight", "user_mlp.weight")
    ITEM_TABLES = ("item_gmf.weight", "item_mlp.weight")
    # The parameters the server owns and aggregates; the user tables are private.
    SHARED_PREFIXES = ("item_gmf.", "item_mlp.", "mlp.", "head.")
    # A pair costs the tower (20k FLOPs at the default sizes). Amazon-Video, 2,018 users, one
    # core: a trained model's full ranking 7.1 s every item at once, 0.6 s in blocks.
    RANK_IN_BLOCKS = True

    def __init__(self, num_users: int, num_items: int, factor_dim: int = 32, mlp_layers: int = 3):
        super().__init__()
        mlp_dim = factor_dim * 2 ** (mlp_layers - 1)
        self.user_gmf = nn.Embedding(num_users, factor_dim)
        self.user_mlp = nn.Embedding(num_users, mlp_dim)
        self.item_gmf = nn.Embedding(num_items, factor_dim)
        self.item_mlp = nn.Embedding(num_items, mlp_dim)
        layers: list[nn.Module] = []
        width = 2 * mlp_dim
        for _ in range(mlp_layers):
            layers += [nn.Linear(width, width // 2), nn.ReLU()]
            width //= 2
        self.mlp = nn.Sequential(*layers)
        self.head = nn.Linear(factor_dim + width, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for table in (self.user_gmf, self.user_mlp, self.item_gmf, self.item_mlp):
            nn.init.normal_(table.weight, std=0.01)
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)
        nn.init.kaiming_uniform_(self.head.weight, a=1, nonlinearity="sigmoid")
        nn.init.zeros_(self.head.bias)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Logits for (user row, item row) pairs given as local indices."""
        gmf = self.user_gmf(users) * self.item_gmf(items)
        mlp = self.mlp(torch.cat([self.user_mlp(users), self.item_mlp(items)], dim=-1))
        return self.head(torch.cat([gmf, mlp], dim=-1)).squeeze(-1)

    @classmethod
    def sizes_of(cls, arrays: dict[str, np.ndarray]) -> dict[str, int]:
        return {"factor_dim": arrays["user_gmf.weight"].shape[1],
                "mlp_layers": sum(1 for k in arrays
                                  if k.startswith("mlp.") and k.endswith(".weight"))}

    # (user, item) pairs scored per pass of score_all and score_candidates: a pass's
    # [pairs, width] tower activations (4096 x 128 floats, 2 MB) then stay near the cache, and
    # each pass is a few large matrix products. One core, quiet: full ranking of 256 users x
    # 11,800 items 1.00 s in whole-row passes (11,800 pairs), 0.87 s in item blocks of 4,096,
    # 1.01 s at 1,024; scoring 2,018 users x 100 candidates takes the same time at 2,048-8,192.
    PAIRS_PER_PASS = 4096

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """Logits of every local item for each of `users`: [len(users), num_items].

        Equal to ``forward`` on all (user, item) pairs (to float rounding), at the cost of the
        tower's products: the first tower layer is split into its user and item halves (the
        item half computed once per model, :meth:`_item_part`), and the GMF half of the head is
        one matrix product of the head-weighted user rows with the item table. A pass covers
        whole rows of several users or, for a catalogue longer than a pass, one block of one
        user's row.
        """
        user_part, user_gmf = self._user_side(users)
        item_part, item_gmf = self._item_part(), self.item_gmf.weight
        num_items = len(item_part)
        out = torch.empty(len(users), num_items)
        chunk = max(1, self.PAIRS_PER_PASS // max(num_items, 1))
        block = min(num_items, self.PAIRS_PER_PASS)
        for start in range(0, len(users), chunk):
            rows = slice(start, start + chunk)
            for begin in range(0, num_items, block):
                cols = slice(begin, begin + block)
                first = item_part[None, cols] + user_part[rows, None]  # [users, items, width]
                out[rows, cols] = (self._tower(first.view(-1, first.shape[2]))
                                   .view(first.shape[:2]) + user_gmf[rows] @ item_gmf[cols].T)
        return out

    def score_candidates(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Logits of each user's candidate items, [n, c], computed as :meth:`score_all`: the
        item half of the first tower layer gathered per candidate, passes of
        ``PAIRS_PER_PASS`` pairs, the GMF half as a batched product."""
        user_part, user_gmf = self._user_side(users)
        item_part, item_gmf = self._item_part(), self.item_gmf.weight
        count = items.shape[1]
        out = torch.empty(items.shape)
        chunk = max(1, self.PAIRS_PER_PASS // max(count, 1))
        for start in range(0, len(users), chunk):
            rows = slice(start, start + chunk)
            flat = items[rows].reshape(-1)
            first = item_part.index_select(0, flat).view(-1, count, item_part.shape[1])
            first += user_part[rows, None]
            gmf = torch.bmm(item_gmf.index_select(0, flat).view(-1, count, item_gmf.shape[1]),
                            user_gmf[rows, :, None])
            out[rows] = self._tower(first.view(len(flat), -1)).view(-1, count) + gmf[..., 0]
        return out

    def _user_side(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per user: the user half of the first tower layer (with its bias), and the GMF row
        weighted by the head's GMF weights (so that a pair's GMF logit is one dot product)."""
        first, width = self.mlp[0], self.user_mlp.embedding_dim
        user_part = torch.addmm(first.bias, self.user_mlp(users), first.weight[:, :width].T)
        gmf_weight = self.head.weight[0, :self.user_gmf.embedding_dim]
        return user_part, self.user_gmf(users) * gmf_weight

    def _tower(self, first: torch.Tensor) -> torch.Tensor:
        """The tower's share of the logit for first-layer pre-activations [pairs, width]
        (overwritten): ReLU, the remaining Linear + ReLU layers, the head's tower weights and
        its bias."""
        h = first.relu_()
        for layer in self.mlp[1:]:
            if isinstance(layer, nn.Linear):  # every Linear is followed by a ReLU
                h = torch.addmm(layer.bias, h, layer.weight.T).relu_()
        gmf_width = self.user_gmf.embedding_dim
        return torch.addmv(self.head.bias, h, self.head.weight[0, gmf_width:])

    def _item_part(self) -> torch.Tensor:
        """Item half of the first tower layer, [num_items, h]; memoised while the item table and
        the layer are unchanged (tensor versions), so a model evaluated for many users in turn
        (its user tables swapped between them) computes it once."""
        weight, table = self.mlp[0].weight, self.item_mlp.weight
        key = (id(weight), weight._version, id(table), table._version)
        if getattr(self, "_item_part_key", None) != key:
            self._item_part_value = table @ weight[:, self.user_mlp.embedding_dim:].T
            self._item_part_key = key
        return self._item_part_value

