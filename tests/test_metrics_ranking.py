"""Ranking metrics: hand-computed ranks, pessimistic ties, full vs sampled ranking, sklearn NDCG."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import ndcg_score

from fedsim.data import load_dataset
from fedsim.metrics import hit_at_k, ndcg_at_k, rank_against_all, rank_against_sampled
from fedsim.metrics.leave_one_out import ScoreMatrix, evaluate_users
from fedsim.metrics.pooling import add, pooled_means


def test_sampled_hand_example():
    pos = np.array([0.9, 0.5, 0.1])
    neg = np.array([[0.1, 0.2, 0.3], [0.6, 0.5, 0.4], [0.2, 0.3, 0.05]])
    # user 0: nothing above; user 1: 0.6 above and 0.5 tied (counted above); user 2: 0.2, 0.3 above
    ranks = rank_against_sampled(pos, neg)
    np.testing.assert_array_equal(ranks, [0, 2, 2])
    assert ranks.dtype == np.int64
    np.testing.assert_array_equal(hit_at_k(ranks, 1), [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(hit_at_k(ranks, 3), [1.0, 1.0, 1.0])
    np.testing.assert_allclose(ndcg_at_k(ranks, 2), [1.0, 0.0, 0.0])
    np.testing.assert_allclose(ndcg_at_k(ranks, 3), [1.0, 0.5, 0.5])  # 1 / log2(2 + 2)


def test_constant_model_gets_the_worst_rank():
    ranks = rank_against_sampled(np.zeros(4), np.zeros((4, 99)))
    np.testing.assert_array_equal(ranks, [99] * 4)
    assert hit_at_k(ranks, 10).sum() == 0 and ndcg_at_k(ranks, 10).sum() == 0


def test_full_ranking_hand_example():
    scores = np.array([[0.5, 0.9, 0.1, 0.7, 0.7, 0.3], [0.2, 0.4, 0.6, 0.8, 0.1, 0.0]])
    positives = np.array([3, 0])
    # user 0 excludes item 1 (0.9); only item 4 (tied 0.7) remains at or above -> rank 1
    # user 1 excludes items 2 and 3 (3 listed twice); only item 1 (0.4) is above 0.2 -> rank 1
    indptr, indices = np.array([0, 1, 4]), np.array([1, 3, 2, 3])
    np.testing.assert_array_equal(rank_against_all(scores, positives, indptr, indices), [1, 1])


def test_full_ranking_equals_sampled_ranking_over_the_remaining_items():
    rng = np.random.default_rng(0)
    n, num_items = 50, 40
    scores = rng.integers(0, 10, (n, num_items)).astype(float)  # coarse scores: many ties
    positives = rng.integers(0, num_items, n)
    excluded = [np.setdiff1d(rng.choice(num_items, rng.integers(0, 20)), [p]) for p in positives]
    indptr = np.concatenate([[0], np.cumsum([len(e) for e in excluded])])
    ranks = rank_against_all(scores, positives, indptr, np.concatenate(excluded))
    for user in range(n):
        negatives = np.setdiff1d(np.arange(num_items), np.append(excluded[user], positives[user]))
        positive_score = scores[user, [positives[user]]]
        assert ranks[user] == rank_against_sampled(positive_score, scores[user, negatives][None])[0]


def test_ndcg_matches_sklearn_for_one_relevant_item():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(200, 100))  # column 0 is the positive; continuous, so no ties
    ranks = rank_against_sampled(scores[:, 0], scores[:, 1:])
    relevance = np.zeros_like(scores)
    relevance[:, 0] = 1.0
    ours = ndcg_at_k(ranks, 10)
    for user in range(len(scores)):
        assert ours[user] == pytest.approx(ndcg_score(relevance[[user]], scores[[user]], k=10))
    assert ours.mean() == pytest.approx(ndcg_score(relevance, scores, k=10))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: rank_against_sampled(np.array([np.nan]), np.zeros((1, 3))), "pos_scores contains"),
        (lambda: rank_against_sampled(np.zeros(2), np.zeros((3, 3))), "neg_scores"),
        (
            lambda: rank_against_all(np.zeros((1, 3)), np.array([1]), [0, 1], np.array([1])),
            "excludes its own positive",
        ),
        (
            lambda: rank_against_all(np.zeros((2, 3)), np.array([1]), np.zeros(3), np.array([])),
            "positives must have shape",
        ),
        (lambda: hit_at_k(np.array([0]), 0), "k=0"),
        (lambda: ndcg_at_k(np.array([-1]), 5), "ranks must be >= 0"),
    ],
)
def test_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_leave_one_out_sums_pool_over_clients_to_the_mean_over_all_users():
    """The pooling convention: two clients' (sum, count) replies, added and divided, give the
    metrics of all their users at once, for every split, protocol and head/tail group; a
    mean computed per client and averaged would not (the halves differ in size)."""
    data = load_dataset("synthetic-rec", protocol="clean")
    users = np.arange(60)
    scores = torch.from_numpy(np.random.default_rng(0).normal(size=(60, data.num_items)))
    whole = evaluate_users(ScoreMatrix(scores), data, users, 0.2)
    parts = [evaluate_users(ScoreMatrix(scores[part]), data, users[part], 0.2)
             for part in (np.arange(0, 17), np.arange(17, 60))]
    pooled, at_once = pooled_means(add(parts)), pooled_means(whole)
    assert set(pooled) == set(at_once) and "val_ndcg@10_full_tail" in pooled
    for name, value in at_once.items():
        assert pooled[name] == pytest.approx(value, abs=1e-12), name
    averaged = np.mean([pooled_means(p)["ndcg@10_full"] for p in parts])
    assert averaged != pytest.approx(at_once["ndcg@10_full"], abs=1e-6)
