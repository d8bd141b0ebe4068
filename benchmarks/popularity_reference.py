"""Reference ranker: items by training popularity, on the same candidates as the federated runs.

A sanity floor for any recommender's numbers: on FilmTrust the sampled protocol (1 positive +
99 random negatives) is nearly solved by popularity alone, so a method's sampled HR@10 means
little unless it beats this. Prints, per dataset, the sampled HR@10 / NDCG@10 on the paper
protocol's split (data.protocol = "fedrecgel", the authors' candidates), the full-ranking
ones on the clean protocol's split (validation item excluded), the splits the tables' columns
use, and the sampled ones on PFedRec's split and candidates (data.protocol = "pfedrec").

    FEDSIM_DATA_DIR=../shared/data python benchmarks/popularity_reference.py [DATASET ...]
"""

from __future__ import annotations

import argparse

import numpy as np

from fedsim.data import load_dataset
from fedsim.metrics import hit_at_k, ndcg_at_k, rank_against_all, rank_against_sampled


def popularity_scores(data) -> np.ndarray:
    """Training counts; a tiny seeded jitter breaks ties between equal counts."""
    return data.item_train_counts() + np.random.default_rng(0).random(data.num_items) * 1e-3


def popularity_metrics(name: str) -> dict[str, float]:
    paper = load_dataset(name, protocol="fedrecgel", num_negatives=99, seed=42)
    scores = popularity_scores(paper)
    sampled = rank_against_sampled(scores[paper.test_items], scores[paper.test_negatives])
    clean = load_dataset(name, protocol="clean", num_negatives=99, seed=42)
    scores = popularity_scores(clean)
    excluded = [np.sort(np.append(clean.user_items(u), clean.val_items[u]))
                for u in range(clean.num_users)]
    indptr = np.concatenate([[0], np.cumsum([len(e) for e in excluded])])
    full = rank_against_all(np.broadcast_to(scores, (clean.num_users, clean.num_items)),
                            clean.test_items, indptr, np.concatenate(excluded))
    pfedrec = load_dataset(name, protocol="pfedrec", num_negatives=99, seed=42)
    scores = popularity_scores(pfedrec)
    theirs = rank_against_sampled(scores[pfedrec.test_items], scores[pfedrec.test_negatives])
    return {"hr@10": hit_at_k(sampled, 10).mean(), "ndcg@10": ndcg_at_k(sampled, 10).mean(),
            "hr@10_full": hit_at_k(full, 10).mean(), "ndcg@10_full": ndcg_at_k(full, 10).mean(),
            "pfedrec_hr@10": hit_at_k(theirs, 10).mean(),
            "pfedrec_ndcg@10": ndcg_at_k(theirs, 10).mean()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("datasets", nargs="*", metavar="DATASET",
                        default=["filmtrust", "amazon-video", "lastfm-2k", "movielens-100k"])
    for name in parser.parse_args().datasets:
        metrics = popularity_metrics(name)
        print(f"{name:16s} paper split (sampled): hr@10 {metrics['hr@10']:.4f} ndcg@10 "
              f"{metrics['ndcg@10']:.4f}  clean split (full ranking): hr@10_full "
              f"{metrics['hr@10_full']:.4f} ndcg@10_full {metrics['ndcg@10_full']:.4f}  "
              f"pfedrec split (sampled): hr@10 {metrics['pfedrec_hr@10']:.4f} ndcg@10 "
              f"{metrics['pfedrec_ndcg@10']:.4f}")
