"""Reference ranker: items by training popularity, on the same candidates as the federated runs.

A sanity floor for any recommender's numbers: on FilmTrust the sampled protocol (1 positive +
99 random negatives) is nearly solved by popularity alone, so a method's sampled HR@10 means
little unless it beats this. Prints sampled and full-ranking HR@10 / NDCG@10 per dataset.

    FEDSIM_DATA_DIR=../shared/data python benchmarks/popularity_reference.py [DATASET ...]
"""

from __future__ import annotations

import sys

import numpy as np

from fedsim.data import load_dataset
from fedsim.metrics import hit_at_k, ndcg_at_k, rank_against_all, rank_against_sampled


def popularity_metrics(name: str) -> dict[str, float]:
    data = load_dataset(name, validation=True, num_negatives=99, seed=42)
    # Counts from training data only; a tiny seeded jitter breaks ties between equal counts.
    scores = data.item_train_counts() + np.random.default_rng(0).random(data.num_items) * 1e-3
    sampled = rank_against_sampled(scores[data.test_items], scores[data.test_negatives])
    excluded = [np.sort(np.append(data.user_items(u), data.val_items[u]))
                for u in range(data.num_users)]
    indptr = np.concatenate([[0], np.cumsum([len(e) for e in excluded])])
    full = rank_against_all(np.broadcast_to(scores, (data.num_users, data.num_items)),
                            data.test_items, indptr, np.concatenate(excluded))
    return {"hr@10": hit_at_k(sampled, 10).mean(), "ndcg@10": ndcg_at_k(sampled, 10).mean(),
            "hr@10_full": hit_at_k(full, 10).mean(), "ndcg@10_full": ndcg_at_k(full, 10).mean()}


if __name__ == "__main__":
    names = sys.argv[1:] or ["filmtrust", "amazon-video", "lastfm-2k", "movielens-100k"]
    for name in names:
        metrics = popularity_metrics(name)
        print(f"{name:16s} " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
