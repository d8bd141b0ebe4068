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

import torch
from torch import nn

# State-dict prefixes of the parameters the server owns and aggregates; the rest is private.
SHARED_PREFIXES = ("item_gmf.", "item_mlp.", "mlp.", "head.")
ITEM_TABLES = ("item_gmf.weight", "item_mlp.weight")


class NeuMF(nn.Module):
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

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """Logits of every local item for each of `users`: [len(users), num_items]."""
        n, m = len(users), self.item_gmf.num_embeddings
        u = users.repeat_interleave(m)
        i = torch.arange(m).repeat(n)
        return self.forward(u, i).view(n, m)


def split_shared_private(state: dict[str, torch.Tensor]):
    """Split a NeuMF state dict into (shared, private) by SHARED_PREFIXES."""
    shared = {k: v for k, v in state.items() if k.startswith(SHARED_PREFIXES)}
    private = {k: v for k, v in state.items() if not k.startswith(SHARED_PREFIXES)}
    return shared, private
