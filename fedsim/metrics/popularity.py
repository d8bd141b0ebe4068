"""Popularity-bias metrics of full-ranking recommendations.

Every function takes a block of users' scores over all M items and their excluded items as
CSR rows (training items, plus the other held-out item), as
:func:`fedsim.metrics.ranking.rank_against_all` does; excluded items are never recommended
and never ranked.

- :func:`top_k_items`: each user's K best remaining items;
- :func:`tail_share`: the fraction of a top-K list that are tail items (its *exposure* of the
  tail); the exposure gap is that share minus the tail share of the users' held-out items;
- :func:`popularity_rank_correlation`: per user, the Spearman correlation between item
  popularity and the user's scores over their remaining items. Its mean over users is our PRU:
  positive when popular items are ranked higher, 0 without popularity bias. This has the sign
  of Zhu et al.'s PRU (WSDM'21, -mean Spearman(popularity, rank position)); they correlate over
  each user's test items, which leave-one-out (one test item) cannot, so the candidates here
  are all the items the user is ranked against.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def excluded_mask(num_items: int, indptr: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Dense [n, num_items] bool mask of the CSR rows (n = len(indptr) - 1)."""
    n = len(indptr) - 1
    mask = np.zeros((n, num_items), dtype=bool)
    mask[np.repeat(np.arange(n), np.diff(indptr)), indices] = True
    return mask


def top_k_items(scores: np.ndarray, k: int, excluded: np.ndarray) -> np.ndarray:
    """[n, k] item ids of each row's k highest scores among non-excluded items, best first.

    Ties are broken towards the lower item id (a stable sort), so the lists are deterministic.
    """
    if not 1 <= k <= scores.shape[1]:
        raise ValueError(f"k = {k}: expected 1 <= k <= {scores.shape[1]} (the number of items)")
    masked = np.where(excluded, -np.inf, scores)
    # argpartition bounds the work to O(M) per row; only the k survivors are sorted.
    part = np.argpartition(-masked, k - 1, axis=1)[:, :k]
    rows = np.arange(len(scores))[:, None]
    order = np.lexsort((part, -masked[rows, part]), axis=1)
    return part[rows, order]


def tail_share(top_items: np.ndarray, tail: np.ndarray) -> np.ndarray:
    """Per row, the fraction of the listed items that are tail items: [n] in [0, 1]."""
    return tail[top_items].mean(axis=1)


def popularity_rank_correlation(scores: np.ndarray, popularity: np.ndarray,
                                excluded: np.ndarray) -> np.ndarray:
    """[n] Spearman correlation of ``popularity`` [M] and each row's scores over its
    non-excluded items (average ranks for ties); NaN where either side is constant."""
    score_ranks = rankdata(np.where(excluded, np.nan, scores.astype(np.float64)), axis=1,
                           nan_policy="omit")
    pop_ranks = _popularity_ranks(popularity, excluded)
    score_ranks -= np.nanmean(score_ranks, axis=1, keepdims=True)
    pop_ranks -= np.nanmean(pop_ranks, axis=1, keepdims=True)
    covariance = np.nansum(score_ranks * pop_ranks, axis=1)
    scale = np.sqrt(np.nansum(score_ranks**2, axis=1) * np.nansum(pop_ranks**2, axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(scale > 0, covariance / scale, np.nan)


def _popularity_ranks(popularity: np.ndarray, excluded: np.ndarray) -> np.ndarray:
    """[n, M] average rank (from 1) of each item's popularity among each row's non-excluded
    items, NaN where excluded.

    Popularity is the same for every row and takes few distinct values, so no per-row sort is
    needed: a value's average rank is (number of candidates below it) + (its count + 1) / 2,
    from per-row counts of each value (the whole catalogue's minus the excluded items')."""
    values, codes = np.unique(popularity, return_inverse=True)
    n, num_values = len(excluded), len(values)
    rows, items = np.nonzero(excluded)
    counts = np.bincount(codes, minlength=num_values)[None, :] - np.bincount(
        rows * num_values + codes[items], minlength=n * num_values).reshape(n, num_values)
    average = np.cumsum(counts, axis=1) - counts + (counts + 1) / 2.0
    return np.where(excluded, np.nan, average[np.arange(n)[:, None], codes[None, :]])
