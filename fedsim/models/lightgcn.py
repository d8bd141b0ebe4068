"""LightGCN (He et al., SIGIR 2020): BPR-MF tables smoothed over the user-item graph.

E^(k+1) = Â E^(k) with Â = D^-1/2 A D^-1/2 the symmetric normalised adjacency of the bipartite
graph of training interactions (no self-loops, no feature transforms, no non-linearity); the
output is the mean of layers 0..L. Â is fixed data, not a parameter: it is kept out of the
state dict, so the model's arrays are the two embedding tables exactly as BPR-MF's.

Â is stored in CSR and, being symmetric, is its own transpose: the backward of Â X is Â G
(:class:`_Propagate`), which is 4-5x cheaper on CPU than autograd through a COO ``sparse.mm``.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from fedsim.models.bprmf import BPRMF


def normalized_adjacency(num_users: int, num_items: int, users: np.ndarray,
                         items: np.ndarray) -> torch.Tensor:
    """Â as a sparse CSR [N, N] float32 tensor, N = num_users + num_items (users first).

    Entry (u, num_users + i) and its transpose are 1 / sqrt(deg(u) deg(i)) for every training
    pair (u, i); nodes without interactions have empty rows (no division by zero). The values
    are computed in float64 and rounded once.
    """
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    deg_u = np.bincount(users, minlength=num_users).astype(np.float64)
    deg_i = np.bincount(items, minlength=num_items).astype(np.float64)
    values = 1.0 / np.sqrt(deg_u[users] * deg_i[items])
    rows = np.concatenate([users, num_users + items])
    cols = np.concatenate([num_users + items, users])
    size = num_users + num_items
    coo = torch.sparse_coo_tensor(
        torch.from_numpy(np.stack([rows, cols])),
        torch.from_numpy(np.concatenate([values, values]).astype(np.float32)),
        (size, size), check_invariants=True).coalesce()
    with warnings.catch_warnings():  # "CSR support is in beta": CSR @ dense is all we use
        warnings.simplefilter("ignore", UserWarning)
        return coo.to_sparse_csr()


class _Propagate(torch.autograd.Function):
    """Â X for a symmetric sparse Â, whose backward is Â G."""

    @staticmethod
    def forward(ctx, adjacency: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.adjacency = adjacency
        return adjacency @ x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[None, torch.Tensor]:
        return None, ctx.adjacency @ grad


class LightGCN(BPRMF):
    def __init__(self, num_users: int, num_items: int, dim: int, layers: int,
                 adjacency: torch.Tensor):
        super().__init__(num_users, num_items, dim)
        if adjacency.shape != (num_users + num_items,) * 2:
            raise ValueError(f"adjacency has shape {tuple(adjacency.shape)}, expected "
                             f"({num_users + num_items}, {num_users + num_items})")
        self.layers = layers
        self.adjacency = adjacency  # a plain attribute: not a parameter, not in the state dict

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        layer = torch.cat([self.user.weight, self.item.weight])
        total = layer
        for _ in range(self.layers):
            layer = _Propagate.apply(self.adjacency, layer)
            total = total + layer
        mean = total / (self.layers + 1)
        return mean[: self.user.num_embeddings], mean[self.user.num_embeddings:]
