"""Evaluation metrics: ranking (HR@K, NDCG@K) and group fairness (DP, EOP, EO)."""

from fedsim.metrics.fairness import (
    GAP_KEYS,
    confusion_counts,
    expected_confusion_counts,
    fairness_gaps,
    global_and_local,
    noise_floors,
)
from fedsim.metrics.ranking import hit_at_k, ndcg_at_k, rank_against_all, rank_against_sampled

__all__ = [
    "GAP_KEYS",
    "confusion_counts",
    "expected_confusion_counts",
    "fairness_gaps",
    "global_and_local",
    "hit_at_k",
    "ndcg_at_k",
    "noise_floors",
    "rank_against_all",
    "rank_against_sampled",
]
