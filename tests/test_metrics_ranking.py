"""Ranking metrics: hand-computed ranks, pessimistic ties, full vs sampled ranking, sklearn NDCG,
full ranking in blocks against every item at once."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import ndcg_score

from fedsim.data import load_dataset
from fedsim.metrics import hit_at_k, ndcg_at_k, rank_against_all, rank_against_sampled
from fedsim.metrics import leave_one_out
from fedsim.metrics.leave_one_out import ScoreMatrix, capped_full_ranks, evaluate_users
from fedsim.models.neumf import NeuMF
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


# --- capped full ranking (scored in blocks until the rank is known to reach K) -------------------

def _exclusions(rng, positives, num_items, most):
    excluded = [np.setdiff1d(rng.choice(num_items, rng.integers(0, most)), [p]) for p in positives]
    indptr = np.concatenate([[0], np.cumsum([len(e) for e in excluded])])
    return indptr, np.concatenate(excluded).astype(np.int64)


@pytest.mark.parametrize("k", [1, 3, 10])
@pytest.mark.parametrize("order", ["popular", "reversed", "shuffled"])
@pytest.mark.parametrize("max_block", [8192, 200])
def test_capped_full_ranks_are_the_full_ranks_capped_at_k(k, order, max_block, monkeypatch):
    """Coarse integer scores (many ties, which count against the positive), 700 items (blocks
    of 128, 256 and the rest; or 128, 200, 200, 172 with the blocks capped at 200): every
    user's capped rank is min(rank, k) of the ranking that scores every item, whatever order
    the blocks take the items in."""
    monkeypatch.setattr(leave_one_out, "MAX_BLOCK", max_block)
    rng = np.random.default_rng(2)
    n, num_items = 80, 700
    scores = rng.integers(0, 40, (n, num_items)).astype(np.float32)
    scores[:10] += 30 * (np.arange(num_items) == 0)  # a few users' positive (item 0) near the top
    positives = np.where(np.arange(n) < 10, 0, rng.integers(0, num_items, n))
    indptr, indices = _exclusions(rng, positives, num_items, 200)
    items = {"popular": np.arange(num_items), "reversed": np.arange(num_items)[::-1],
             "shuffled": rng.permutation(num_items)}[order]
    full = rank_against_all(scores, positives, indptr, indices)
    scorer = ScoreMatrix(torch.from_numpy(scores))
    widths = []  # candidates per user of each block: the positive and the block's items
    score = scorer.score_candidates
    scorer.score_candidates = lambda rows, candidates: (widths.append(candidates.shape[1])
                                                        or score(rows, candidates))
    capped = capped_full_ranks(scorer, torch.arange(n), positives, indptr, indices, items, k)
    np.testing.assert_array_equal(capped, np.minimum(full, k))
    schedule = [128, 256, 316] if max_block > 700 else [128, 200, 200, 172]
    assert len(widths) > 1 and widths == [1 + b for b in schedule][:len(widths)]
    assert (full < k).any() and (full >= k).any()  # both kinds of user are checked


def test_capped_full_ranks_of_a_constant_model_are_the_worst():
    """Ties count against the positive in blocks too: a model scoring every item the same ranks
    every positive at k (capped), not first."""
    scores = torch.zeros(3, 500)
    ranks = capped_full_ranks(ScoreMatrix(scores), torch.arange(3), np.array([0, 7, 499]),
                              np.zeros(4, np.int64), np.zeros(0, np.int64), np.arange(500))
    np.testing.assert_array_equal(ranks, [10, 10, 10])


def test_capped_full_ranks_errors():
    scores = ScoreMatrix(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="excludes its own positive"):
        capped_full_ranks(scores, torch.arange(1), np.array([1]), np.array([0, 1]), np.array([1]),
                          np.arange(3))
    with pytest.raises(ValueError, match="NaN"):
        capped_full_ranks(ScoreMatrix(torch.full((1, 3), float("nan"))), torch.arange(1),
                          np.array([1]), np.array([0, 0]), np.zeros(0, np.int64), np.arange(3))


def test_neumf_full_ranking_in_blocks_equals_every_item_at_once_on_amazon_video(data_dir,
                                                                                monkeypatch):
    """NeuMF ranks in blocks (RANK_IN_BLOCKS); on real data (Amazon-Video, clean protocol: test
    and validation splits, 300 users, O(1) embeddings so the ReLUs are not all off), every
    metric equals the one of the ranking that scores every item at once."""
    data = load_dataset("amazon-video", data_dir=str(data_dir), protocol="clean")
    torch.manual_seed(0)
    model = NeuMF(num_users=300, num_items=data.num_items)
    users = np.arange(300) * 7
    with torch.no_grad():
        for table in (model.user_gmf, model.user_mlp, model.item_gmf, model.item_mlp):
            table.weight.normal_()
        # Users 0-59 lean towards their test item, 60-119 towards their validation item, so
        # that positives also land in the top 10, at several ranks.
        sign = model.head.weight[0, :32].sign()
        for rows, held_out in ((slice(0, 60), data.test_items), (slice(60, 120), data.val_items)):
            leaning = model.item_gmf.weight[held_out[users[rows]]] * sign
            model.user_gmf.weight[rows] = leaning * torch.linspace(0.2, 2, 60)[:, None]
    assert NeuMF.RANK_IN_BLOCKS
    with torch.no_grad():
        in_blocks = evaluate_users(model, data, users, 0.2)
        monkeypatch.setattr(NeuMF, "RANK_IN_BLOCKS", False)
        at_once = evaluate_users(model, data, users, 0.2)
    assert in_blocks.keys() == at_once.keys() and "val_ndcg@10_full_tail" in at_once
    for split in ("", "val_"):  # hits, not all at rank 0
        assert 0 < at_once[f"{split}ndcg@10_full"] < at_once[f"{split}hr@10_full"]
    assert in_blocks == at_once
