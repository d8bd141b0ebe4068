"""Full-ranking accuracy per item and user group, and popularity bias, as (sum, count) pairs.

For the test items of a client's users (ranked against every item but their training and
validation items), with K in :data:`KS`:

- ``hr@K_full{group}``, ``ndcg@K_full{group}``: groups "" (all), "_head"/"_tail" (by the test
  item: head = top ``fraction`` of items by training count) and "_active"/"_inactive" (by the
  user: active = top ``fraction`` of users by training count). With one held-out item per
  user, Recall@K = HR@K;
- ``tail_exposure@K``: mean tail share of the top-K lists; ``tail_share_test``: tail share of
  the test items; ``exposure_gap@K`` = their difference (positive: the tail is over-exposed);
- ``pru``: mean per-user Spearman(popularity, score) (:mod:`fedsim.metrics.popularity`).

Each metric ``name`` comes with ``name/n`` (its count), so clients pool exactly
(:mod:`fedsim.metrics.pooling`). Users are processed in blocks of
:data:`BLOCK`, which bounds memory on large item sets.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from fedsim.data import Interactions
from fedsim.metrics import hit_at_k, ndcg_at_k, rank_against_all
from fedsim.metrics.leave_one_out import exclusions
from fedsim.metrics.pooling import count_of
from fedsim.metrics.popularity import (excluded_mask, popularity_rank_correlation, tail_share,
                                       top_k_items)

KS = (10, 20)
BLOCK = 512


def bias_metrics(scores: np.ndarray, data: Interactions, users: np.ndarray,
                 fraction: float) -> dict[str, float]:
    """Metric sums and counts (``name``, ``name/n``) of ``users``; ``scores`` is
    [len(users), num_items]."""
    tail = ~data.head_item_mask(fraction)
    inactive = ~data.active_user_mask(fraction)[users]
    popularity = data.item_train_counts()
    indptr, indices = exclusions(data, users, data.test_items, data.val_items)
    positives = data.test_items[users]
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, float] = defaultdict(float)
    for start in range(0, len(users), BLOCK):
        block = slice(start, start + BLOCK)
        ptr = indptr[start:start + BLOCK + 1]
        rows = indices[ptr[0]:ptr[-1]]
        ptr = ptr - ptr[0]
        block_scores, pos = scores[block], positives[block]
        excluded = excluded_mask(data.num_items, ptr, rows)
        ranks = rank_against_all(block_scores, pos, ptr, rows)
        groups = {"": np.ones(len(pos), bool), "_head": ~tail[pos], "_tail": tail[pos],
                  "_active": ~inactive[block], "_inactive": inactive[block]}
        for k in KS:
            hits, gains = hit_at_k(ranks, k), ndcg_at_k(ranks, k)
            for group, mask in groups.items():
                for name, values in ((f"hr@{k}_full{group}", hits),
                                     (f"ndcg@{k}_full{group}", gains)):
                    sums[name] += float(values[mask].sum())
                    counts[name] += float(mask.sum())
            share = tail_share(top_k_items(block_scores, k, excluded), tail)
            for name, values in ((f"tail_exposure@{k}", share),
                                 (f"exposure_gap@{k}", share - tail[pos])):
                sums[name] += float(values.sum())
                counts[name] += float(len(pos))
        sums["tail_share_test"] += float(tail[pos].sum())
        counts["tail_share_test"] += float(len(pos))
        pru = popularity_rank_correlation(block_scores, popularity, excluded)
        defined = np.isfinite(pru)
        sums["pru"] += float(pru[defined].sum())
        counts["pru"] += float(defined.sum())
    pairs = {}
    for name, total in sums.items():
        pairs[name] = total
        pairs[count_of(name)] = counts[name]
    return pairs
