"""Client-side ranking evaluation of a recommendation model on the client's own users.

Each client ranks its users' held-out items (test, and validation when present) two ways:
- sampled: against the 99 fixed negatives (the FedRecGEL authors' protocol);
- full: against every item the user has not interacted with (training items and the other
  held-out item excluded).
It returns *sums and counts* rather than means, so the server's pooled mean over all users is
exact whatever the client sizes. Head/tail is decided by the held-out item (head = top
``head_fraction`` of items by training count).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from fedsim.data import Interactions
from fedsim.metrics import hit_at_k, ndcg_at_k, rank_against_all, rank_against_sampled

K = 10
GROUPS = ("", "_head", "_tail")


def evaluate_users(model: torch.nn.Module, data: Interactions, users: np.ndarray,
                   head_fraction: float) -> dict[str, float]:
    """Metric sums ("hr@10", "val_ndcg@10_full_tail", ...) and counts ("n", "val_n_tail", ...)."""
    local = torch.arange(len(users))
    full_scores = model.score_all(local).numpy()
    head = _head_mask(data, head_fraction)
    splits = [("", data.test_items, data.test_negatives, data.val_items)]
    if data.val_items is not None:
        splits.append(("val_", data.val_items, data.val_negatives, data.test_items))
    sums: dict[str, float] = {}
    for prefix, held_out, negatives, other in splits:
        positives = held_out[users]
        candidates = np.concatenate([positives[:, None], negatives[users]], axis=1)
        rows = np.arange(len(users))[:, None]
        sampled = full_scores[rows, candidates]
        ranks = {"": rank_against_sampled(sampled[:, 0], sampled[:, 1:]),
                 "_full": rank_against_all(full_scores, positives,
                                           *_exclusions(data, users, other))}
        groups = {"": np.ones(len(users), bool), "_head": head[positives],
                  "_tail": ~head[positives]}
        for group, mask in groups.items():
            sums[f"{prefix}n{group}"] = float(mask.sum())
            for protocol, r in ranks.items():
                sums[f"{prefix}hr@{K}{protocol}{group}"] = float(hit_at_k(r[mask], K).sum())
                sums[f"{prefix}ndcg@{K}{protocol}{group}"] = float(ndcg_at_k(r[mask], K).sum())
    return sums


@functools.lru_cache(maxsize=8)
def _head_mask(data: Interactions, fraction: float) -> np.ndarray:
    """The dataset's head items, computed once per process rather than per user and round
    (datasets are cached and immutable; they hash by identity)."""
    return data.head_item_mask(fraction)


def _exclusions(data: Interactions, users: np.ndarray,
                other_held_out: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """CSR of the items each user must not be ranked against: training items (+ other held-out)."""
    rows = []
    for user in users:
        items = data.user_items(int(user))
        if other_held_out is not None:
            items = np.append(items, other_held_out[user])
        rows.append(np.sort(items))
    indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([len(r) for r in rows])
    return indptr, np.concatenate(rows).astype(np.int64)


def means_from_sums(sums: dict[str, float]) -> dict[str, float]:
    """Pooled means from summed client replies: metric sum / the count of its split and group."""
    means = {}
    for name, total in sums.items():
        if "@" not in name:
            continue
        prefix = "val_" if name.startswith("val_") else ""
        group = next((g for g in GROUPS[1:] if name.endswith(g)), "")
        count = sums.get(f"{prefix}n{group}", 0.0)
        means[name] = total / count if count else float("nan")
    return means
