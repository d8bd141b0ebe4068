"""PFedRec's model (../shared/research/pfedrec.md): an item table shared through the server and,
on each client, a score function sigmoid(w_u . e + b_u). Both sides start from the same draw."""

from __future__ import annotations

import functools

import numpy as np
import torch


@functools.lru_cache(maxsize=4)
def initial_model(num_items: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(item table [num_items, dim], w [dim], b [1]) of the authors' model built from `seed`:
    nn.Embedding (N(0, 1)) then nn.Linear(dim, 1) (PyTorch's default init). Every client starts
    from this score function and the server from this table. Cached per process (read-only)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        table = torch.nn.Embedding(num_items, dim).weight.detach().numpy()
        score = torch.nn.Linear(dim, 1)
    arrays = (table, score.weight.detach().numpy()[0], score.bias.detach().numpy())
    for array in arrays:
        array.flags.writeable = False
    return arrays
