"""Leave-one-out ranking metrics with one relevant item per user (HR@K, NDCG@K).

Ranks are 0-based: rank r means r candidates are placed above the positive. Ties count against
the positive (pessimistic): a tied candidate is placed above it. With optimistic ties a model
that scores every item the same (collapsed to a constant, or untrained) would rank every
positive first and get HR = NDCG = 1; with pessimistic ties it gets the worst rank. NaN scores
raise, since comparisons with NaN are false and would silently rank the positive first.
"""

from __future__ import annotations

import numpy as np

__all__ = ["rank_against_sampled", "rank_against_all", "hit_at_k", "ndcg_at_k"]


def reject_nan(name: str, scores: np.ndarray) -> None:
    if np.isnan(scores).any():
        raise ValueError(f"{name} contains NaN; NaN scores cannot be ranked")


def rank_against_sampled(pos_scores: np.ndarray, neg_scores: np.ndarray) -> np.ndarray:
    """Rank of each positive among itself and its k sampled negatives (the FedRecGEL protocol).

    ``pos_scores`` is [n], ``neg_scores`` is [n, k]; returns int64 [n] in [0, k], the number
    of negatives scoring >= the positive.
    """
    pos_scores = np.asarray(pos_scores)
    neg_scores = np.asarray(neg_scores)
    if pos_scores.ndim != 1 or neg_scores.ndim != 2 or neg_scores.shape[0] != pos_scores.shape[0]:
        raise ValueError(
            f"pos_scores must be [n] and neg_scores [n, k]; got {pos_scores.shape} and "
            f"{neg_scores.shape}"
        )
    reject_nan("pos_scores", pos_scores)
    reject_nan("neg_scores", neg_scores)
    return (neg_scores >= pos_scores[:, None]).sum(axis=1).astype(np.int64)


def rank_against_all(
    scores: np.ndarray,
    positives: np.ndarray,
    exclude_indptr: np.ndarray,
    exclude_indices: np.ndarray,
) -> np.ndarray:
    """Rank of each user's positive among all M items minus that user's excluded items.

    ``scores`` is [n, M] for a batch of n users; ``positives`` [n] holds each user's positive
    item. The excluded items (the user's training items, plus the validation item when ranking
    the test item) come as CSR rows: user u's are
    ``exclude_indices[exclude_indptr[u]:exclude_indptr[u + 1]]`` (e.g. ``csr[batch].indptr``
    and ``.indices`` of a scipy matrix); duplicates are harmless. Excluding the positive itself
    is a data bug (the test item leaked into training) and raises. Returns int64 [n]: the
    number of remaining items scoring >= the positive.
    """
    scores = np.asarray(scores)
    positives = np.asarray(positives, dtype=np.int64)
    exclude_indptr = np.asarray(exclude_indptr, dtype=np.int64)
    exclude_indices = np.asarray(exclude_indices, dtype=np.int64)
    n, num_items = scores.shape
    if positives.shape != (n,) or exclude_indptr.shape != (n + 1,):
        raise ValueError(
            f"for scores of shape {scores.shape}, positives must have shape ({n},) and "
            f"exclude_indptr ({n + 1},); got {positives.shape} and {exclude_indptr.shape}"
        )
    reject_nan("scores", scores)
    users = np.arange(n)
    excluded = excluded_mask(num_items, positives, exclude_indptr, exclude_indices)
    above = (scores >= scores[users, positives][:, None]) & ~excluded
    return above.sum(axis=1).astype(np.int64) - 1  # the positive ties with itself


def excluded_mask(num_items: int, positives: np.ndarray, exclude_indptr: np.ndarray,
                  exclude_indices: np.ndarray) -> np.ndarray:
    """[n, num_items] bool: True at each user's excluded items (CSR rows, as
    :func:`rank_against_all` takes them); raises if a user excludes its own positive."""
    n = len(positives)
    users = np.arange(n)
    excluded = np.zeros((n, num_items), dtype=bool)
    excluded[np.repeat(users, np.diff(exclude_indptr)), exclude_indices] = True
    if excluded[users, positives].any():
        bad = int(np.flatnonzero(excluded[users, positives])[0])
        raise ValueError(
            f"user row {bad} excludes its own positive item {int(positives[bad])}; the "
            f"positive must not be among the excluded (training/validation) items"
        )
    return excluded


def _check_ranks(ranks: np.ndarray, k: int) -> np.ndarray:
    if k < 1:
        raise ValueError(f"k={k} is invalid; it must be >= 1")
    ranks = np.asarray(ranks)
    if (ranks < 0).any():
        raise ValueError("ranks must be >= 0 (0-based ranks)")
    return ranks


def hit_at_k(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per-user HR@k: 1.0 when the positive is in the top k (rank < k), else 0.0."""
    ranks = _check_ranks(ranks, k)
    return (ranks < k).astype(np.float64)


def ndcg_at_k(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per-user NDCG@k with one relevant item: 1 / log2(rank + 2) if rank < k, else 0.

    With a single relevant item the ideal DCG is 1, so NDCG equals the DCG of the positive.
    """
    ranks = _check_ranks(ranks, k)
    return np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0)
