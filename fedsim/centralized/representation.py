"""Representation regularizers of AURL on L2-normalised embeddings (rows on the unit sphere).

For unit vectors ||x - y||² = 2 - 2<x, y>, which is how every squared distance here is
computed: it needs no square root, so gradients stay finite when two rows coincide.

- :func:`mmd2`: squared Maximum Mean Discrepancy with a sum of Gaussian kernels
  k(x, y) = sum_s exp(-||x - y||² / (2 s²)), s in :data:`BANDWIDTHS` (biased V-statistic);
- :func:`uniformity`: Wang & Isola's uniformity, log mean_{x != y} exp(-t ||x - y||²);
- :func:`cap_rows`: a random subset of at most ``limit`` rows, since both are O(n²).
"""

from __future__ import annotations

import math

import torch

# Distances between unit vectors lie in [0, 2]; three scales cover near, middle and far pairs.
BANDWIDTHS = (0.5, 1.0, 2.0)
MAX_ROWS = 1024


def _squared_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (2.0 - 2.0 * x @ y.T).clamp_min(0.0)


def gaussian_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """[len(x), len(y)] sum over :data:`BANDWIDTHS` of exp(-||x - y||² / (2 s²)); rows unit-norm."""
    distances = _squared_distances(x, y)
    return sum(torch.exp(-distances / (2.0 * s * s)) for s in BANDWIDTHS)


def mmd2(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """MMD²(X, Y) = mean k(X, X) + mean k(Y, Y) - 2 mean k(X, Y); 0 for X = Y. When ``y``
    needs no gradient (a stop-gradient target) its own term is computed without a graph."""
    with torch.set_grad_enabled(y.requires_grad and torch.is_grad_enabled()):
        yy = gaussian_kernel(y, y).mean()
    return gaussian_kernel(x, x).mean() + yy - 2.0 * gaussian_kernel(x, y).mean()


def uniformity(z: torch.Tensor, t: float) -> torch.Tensor:
    """log of the mean over pairs x != y of exp(-t ||x - y||²); lower = more spread. Needs 2 rows."""
    n = len(z)
    if n < 2:
        raise ValueError(f"uniformity needs at least 2 rows, got {n}")
    # Over ordered pairs (each unordered pair twice: same mean), the diagonal left out.
    logits = (-t * _squared_distances(z, z)).masked_fill(torch.eye(n, dtype=torch.bool),
                                                         -math.inf)
    return torch.logsumexp(logits.flatten(), dim=0) - math.log(n * (n - 1))


def cap_rows(z: torch.Tensor, limit: int = MAX_ROWS) -> torch.Tensor:
    """``z`` itself if it has at most ``limit`` rows, else ``limit`` rows drawn without
    replacement with torch's global generator (seeded per round by the client)."""
    if len(z) <= limit:
        return z
    return z[torch.randperm(len(z))[:limit]]


def group_alignment(z: torch.Tensor, is_tail: torch.Tensor) -> torch.Tensor:
    """MMD² between the tail rows of ``z`` and the head rows held fixed (stop-gradient), so only
    the tail moves towards the head's distribution; each side capped at :data:`MAX_ROWS` rows.
    0 when either side has fewer than 2 rows."""
    tail, head = cap_rows(z[is_tail]), cap_rows(z[~is_tail])
    if len(tail) < 2 or len(head) < 2:
        return z.new_zeros(())
    return mmd2(tail, head.detach())
