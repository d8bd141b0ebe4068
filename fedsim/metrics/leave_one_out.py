"""Leave-one-out ranking evaluation of a recommendation model on a client's own users.

Each client ranks its users' held-out items (test, and validation when present) two ways:
- sampled: against the 99 fixed negatives (the FedRecGEL authors' protocol);
- full: against every item the user has not interacted with (training items and the other
  held-out item excluded). A scorer whose pairs are costly (``RANK_IN_BLOCKS``: NeuMF's
  tower) scores the items block by block until the rank is known to reach K
  (:func:`capped_full_ranks`), as HR@K and NDCG@K read nothing beyond that; the others score
  every item at once (MF's is one matrix product, cheaper than the blocks' bookkeeping).
It returns *sums and counts* rather than means (:mod:`fedsim.metrics.pooling`), so the
server's pooled mean over all users is exact whatever the client sizes. Head/tail is decided by
the held-out item (head = top ``head_fraction`` of items by training count).

Names: "<split><metric>@<K><protocol><group>" (e.g. "val_ndcg@10_full_tail") with split "" (test)
or "val_", protocol "" (sampled negatives) or "_full", group "", "_head" or "_tail"; each with
its count of users, "<name>/n".
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from fedsim.data import Interactions
from fedsim.metrics.pooling import count_of
from fedsim.metrics.ranking import (excluded_mask, hit_at_k, ndcg_at_k, rank_against_all,
                                    rank_against_sampled, reject_nan)

K = 10
VALIDATION = "val_"
GROUPS = ("", "_head", "_tail")
# Items of the first block of a capped full ranking; each later block doubles, up to
# MAX_BLOCK (which bounds a block's candidate and score arrays on large catalogues). A trained
# Amazon-Video NeuMF (clean protocol) had 10 of the 10-15 most popular items at or above the
# positive for 90% of its users, so most users are settled by the first block.
FIRST_BLOCK, MAX_BLOCK = 128, 8192


class ScoreMatrix:
    """A model given as its scores: row r of `scores` holds local user r's score of every item
    (a centralized trainer scores all its users at once, then evaluates them)."""

    def __init__(self, scores: torch.Tensor):
        self.scores = scores

    def score_all(self, local_rows: torch.Tensor) -> torch.Tensor:
        return self.scores[local_rows]

    def score_candidates(self, local_rows: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.scores[local_rows[:, None], items]


def evaluate_users(model: torch.nn.Module, data: Interactions, users: np.ndarray,
                   head_fraction: float, full: bool = True,
                   val_model: torch.nn.Module | None = None) -> dict[str, float]:
    """Metric sums ("hr@10", "val_ndcg@10_full_tail", ...) and their user counts ("hr@10/n").

    ``full = False`` leaves out the full-ranking metrics, whose cost grows with the number of
    items (the sampled ones score 100 candidates per user). ``val_model``: see
    :func:`per_user_metrics`.
    """
    return {name: float(values.sum()) for name, values in per_user_metrics(
        model, data, users, head_fraction, full, val_model).items()}


def evaluate_user_groups(model: torch.nn.Module, data: Interactions, users: np.ndarray,
                         sizes: list[int], head_fraction: float, full: bool = True
                         ) -> list[dict[str, float]]:
    """:func:`evaluate_users` for consecutive groups of ``users`` (a cohort's clients) at once:
    one scoring pass for all of them, sums split per group of ``sizes`` users."""
    starts = np.cumsum([0] + list(sizes[:-1]))
    per_user = per_user_metrics(model, data, users, head_fraction, full)
    grouped = {name: np.add.reduceat(values, starts) for name, values in per_user.items()}
    return [{name: float(sums[g]) for name, sums in grouped.items()} for g in range(len(sizes))]


def per_user_metrics(model: torch.nn.Module, data: Interactions, users: np.ndarray,
                     head_fraction: float, full: bool,
                     val_model: torch.nn.Module | None = None) -> dict[str, np.ndarray]:
    """Per user (float arrays in the order of ``users``): hit and NDCG of every split, protocol
    and group, each with its 0/1 membership count ("<name>/n"). ``model`` scores local rows 0..len(users)-1.

    ``val_model`` scores the validation split when its scores differ from the test split's (a
    sequential model reads the validation item before the test item, not before itself);
    None = ``model`` scores both.
    """
    local = torch.arange(len(users))
    full_scores = {}  # scorer -> its [len(users), num_items] scores, computed once
    head = _head_mask(data, head_fraction)
    splits = [("", data.test_items, data.test_negatives, data.val_items)]
    if data.val_items is not None:
        splits.append((VALIDATION, data.val_items, data.val_negatives, data.test_items))
    metrics: dict[str, np.ndarray] = {}
    for prefix, held_out, negatives, other in splits:
        scorer = val_model if prefix and val_model is not None else model
        positives = held_out[users]
        candidates = np.concatenate([positives[:, None], negatives[users]], axis=1)
        sampled = scorer.score_candidates(local, torch.from_numpy(candidates)).numpy()
        ranks = {"": rank_against_sampled(sampled[:, 0], sampled[:, 1:])}
        if full and getattr(scorer, "RANK_IN_BLOCKS", False):
            ranks["_full"] = capped_full_ranks(scorer, local, positives,
                                               *exclusions(data, users, held_out, other),
                                               _popularity_order(data))
        elif full:
            if scorer not in full_scores:
                full_scores[scorer] = scorer.score_all(local).numpy()
            ranks["_full"] = rank_against_all(full_scores[scorer], positives,
                                              *exclusions(data, users, held_out, other))
        masks = (np.ones(len(users), bool), head[positives], ~head[positives])
        for group, mask in zip(GROUPS, masks):
            count = mask.astype(np.float64)
            for protocol, r in ranks.items():
                for name, values in ((f"{prefix}hr@{K}{protocol}{group}", hit_at_k(r, K)),
                                     (f"{prefix}ndcg@{K}{protocol}{group}", ndcg_at_k(r, K))):
                    metrics[name] = values * mask
                    metrics[count_of(name)] = count
    return metrics


def capped_full_ranks(scorer, local: torch.Tensor, positives: np.ndarray,
                      exclude_indptr: np.ndarray, exclude_indices: np.ndarray,
                      order: np.ndarray, k: int = K) -> np.ndarray:
    """``min(rank, k)`` of each user's positive among all items but its excluded ones, where
    rank is :func:`~fedsim.metrics.ranking.rank_against_all`'s (remaining items scoring at or
    above the positive: ties count against it): all that HR@k and NDCG@k read of it.

    Rather than scoring every item for every user, the items are scored in blocks, in
    ``order`` (most popular first; any order gives the same ranks), the first of
    :data:`FIRST_BLOCK` items and each next one twice as long (at most :data:`MAX_BLOCK`), each
    block for the users still below k items at or above their positive. Each block's scores
    come from one ``scorer.score_candidates`` call whose first column is the user's positive,
    so the positive and the items it is compared with are scored by the same computation. A
    user whose positive is in its top k is scored against every item; the others stop as soon
    as k items are found above, which on trained models is usually within the first block.
    ``local``: the scorer's rows of the users; exclusions as CSR rows, as
    :func:`~fedsim.metrics.ranking.rank_against_all` takes them.
    """
    positives = np.asarray(positives, dtype=np.int64)
    n, num_items = len(positives), len(order)
    excluded = excluded_mask(num_items, positives, exclude_indptr, exclude_indices)
    excluded[np.arange(n), positives] = True  # never counted against itself
    above = np.zeros(n, dtype=np.int64)
    active = np.arange(n)
    start, size = 0, FIRST_BLOCK
    while start < num_items and len(active):
        block = order[start:start + size]
        candidates = np.empty((len(active), 1 + len(block)), dtype=np.int64)
        candidates[:, 0], candidates[:, 1:] = positives[active], block
        scores = scorer.score_candidates(local[torch.from_numpy(active)],
                                         torch.from_numpy(candidates)).numpy()
        reject_nan("scores", scores)
        beaten = (scores[:, 1:] >= scores[:, :1]) & ~excluded[active[:, None], block]
        above[active] += beaten.sum(axis=1)
        active = active[above[active] < k]
        start, size = start + size, min(2 * size, MAX_BLOCK)
    return np.minimum(above, k)


@functools.lru_cache(maxsize=8)
def _popularity_order(data: Interactions) -> np.ndarray:
    """:meth:`Interactions.items_by_popularity`, computed once per process (datasets are
    cached and immutable; they hash by identity)."""
    return data.items_by_popularity()


@functools.lru_cache(maxsize=8)
def _head_mask(data: Interactions, fraction: float) -> np.ndarray:
    """The dataset's head items, computed once per process rather than per user and round
    (datasets are cached and immutable; they hash by identity)."""
    return data.head_item_mask(fraction)


def exclusions(data: Interactions, users: np.ndarray, held_out: np.ndarray,
               other_held_out: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """CSR of the items each user must not be ranked against: training items (+ the other
    held-out item), but never the ``held_out`` item being ranked. A protocol that keeps
    duplicate rows (the FedRecGEL authors') leaves the other row of a held-out pair in training;
    that item is then ranked like an unseen one, as the authors' sampled evaluation does."""
    rows = []
    for user in users:
        items = data.user_items(int(user))
        items = items[items != held_out[user]]
        if other_held_out is not None:
            items = np.append(items, other_held_out[user])
        rows.append(np.sort(items))
    indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([len(r) for r in rows])
    return indptr, np.concatenate(rows).astype(np.int64)
