"""AURL: its regularizers, LightGCN's propagation, the bias metrics and a short real run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr

from fedsim.centralized.bias_eval import bias_metrics
from fedsim.centralized.bpr import BPRSampler
from fedsim.centralized.registry import make_trainer
from fedsim.centralized.representation import mmd2, uniformity
from fedsim.centralized.trainer import pooled_means
from fedsim.data import load_dataset
from fedsim.federation import load_federation
from fedsim.metrics.popularity import (excluded_mask, popularity_rank_correlation, tail_share,
                                       top_k_items)
from fedsim.models.lightgcn import LightGCN, normalized_adjacency
from fedsim.spec import resolve
from tests.helpers import run_fake


@pytest.fixture(autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # see tests/test_centralized.py
    yield
    torch.set_num_threads(threads)


def unit_rows(n: int, dim: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(n, dim, generator=generator)
    z[:, 0] += shift
    return F.normalize(z, dim=1)


# --- regularizers ----------------------------------------------------------------------------

def test_mmd_is_zero_for_identical_sets_and_grows_with_a_shift():
    x = unit_rows(500, 8, seed=0)
    assert mmd2(x, x).item() == pytest.approx(0.0, abs=1e-6)
    same_law = mmd2(x, unit_rows(500, 8, seed=1)).item()  # finite-sample bias only
    shifted = [mmd2(x, unit_rows(500, 8, seed=1, shift=s)).item() for s in (1.0, 3.0)]
    assert same_law < shifted[0] < shifted[1]
    assert shifted[0] > 5 * same_law


def test_uniformity_is_lower_for_spread_embeddings():
    spread = unit_rows(300, 8, seed=0)
    clustered = unit_rows(300, 8, seed=0, shift=5.0)  # every row near e_1
    assert uniformity(spread, t=2.0) < uniformity(clustered, t=2.0) - 0.5
    # All rows equal: every pair at distance 0, the maximum log-mean-exp of 0.
    assert uniformity(spread[:1].repeat(10, 1), t=2.0).item() == pytest.approx(0.0, abs=1e-6)
    # The gradient stays finite when rows coincide (no square root of 0).
    z = spread[:1].repeat(5, 1).requires_grad_()
    uniformity(z, t=2.0).backward()
    assert torch.isfinite(z.grad).all()


def test_the_regularizers_change_training_only_when_weighted():
    """λ > 0 moves the parameters away from the plain backbone's (λ = 0 equality with the plain
    loop is tests/test_centralized.py); each term on its own does something."""
    base = {"method": "aurl", "model": "bprmf", "dataset": "synthetic-rec",
            "partitioner": "single", "central.dim": 16}
    weights = {}
    for name, ga, gu in (("plain", 0.0, 0.0), ("ga", 1.0, 0.0), ("gu", 0.0, 1.0)):
        spec = resolve({**base, "aurl.lambda_ga": ga, "aurl.lambda_gu": gu})
        federation = load_federation(spec)
        trainer = make_trainer(spec, federation.dataset, federation.train_parts[0])
        torch.manual_seed(0)
        model = trainer.build_model()
        trainer.train_epoch(model, trainer.make_optimizer(model), np.random.default_rng(0))
        weights[name] = model.item.weight.detach().clone()
    assert not torch.equal(weights["plain"], weights["ga"])
    assert not torch.equal(weights["plain"], weights["gu"])


# --- LightGCN ----------------------------------------------------------------------------------

def test_lightgcn_is_the_mean_of_dense_propagated_layers_and_its_gradient_matches():
    rng = np.random.default_rng(0)
    users, items = rng.integers(6, size=40), rng.integers(9, size=40)
    pairs = np.unique(np.stack([users, items], 1), axis=0)
    adjacency = normalized_adjacency(6, 9, pairs[:, 0], pairs[:, 1])
    torch.manual_seed(0)
    model = LightGCN(6, 9, 4, layers=3, adjacency=adjacency)
    # Dense reference: A = [[0, R], [R^T, 0]], D^-1/2 A D^-1/2, mean of E, ÂE, Â²E, Â³E.
    a = np.zeros((15, 15))
    a[pairs[:, 0], 6 + pairs[:, 1]] = a[6 + pairs[:, 1], pairs[:, 0]] = 1.0
    degree = a.sum(1)
    scale = np.where(degree > 0, degree, 1.0) ** -0.5
    dense = torch.tensor(scale[:, None] * a * scale[None, :], dtype=torch.float64)
    ego = torch.cat([model.user.weight, model.item.weight]).detach().double().requires_grad_()
    layers = [ego]
    for _ in range(3):
        layers.append(dense @ layers[-1])
    reference = torch.stack(layers).mean(0)
    user_out, item_out = model()
    torch.testing.assert_close(torch.cat([user_out, item_out]).double(), reference,
                               rtol=1e-5, atol=1e-6)
    weights = torch.randn(15, 4, dtype=torch.float64)
    (torch.cat([user_out, item_out]).double() * weights).sum().backward()
    (reference * weights).sum().backward()
    torch.testing.assert_close(torch.cat([model.user.weight.grad, model.item.weight.grad]).double(),
                               ego.grad, rtol=1e-5, atol=1e-6)


# --- sampling -------------------------------------------------------------------------------

def test_negatives_are_never_training_items_of_their_user(data_dir):
    data = load_dataset("movielens-100k", validation=True)
    sampler = BPRSampler(data, np.arange(data.num_users))
    assert len(sampler) == data.num_train
    users = np.repeat(np.arange(data.num_users), 50)
    negatives = sampler.negatives(np.random.default_rng(0), users)
    for u in range(0, data.num_users, 37):
        assert not np.isin(negatives[users == u], data.user_items(u)).any()
    assert sampler.is_positive(sampler.users, sampler.items).all()


# --- metrics ----------------------------------------------------------------------------------

def test_pru_equals_scipy_spearman_per_user_over_the_ranked_items():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(5, 30)).round(1)  # rounded: ties in scores
    popularity = rng.integers(0, 6, size=30)  # ties in popularity
    excluded = rng.random((5, 30)) < 0.3
    got = popularity_rank_correlation(scores, popularity, excluded)
    for u in range(5):
        keep = ~excluded[u]
        assert got[u] == pytest.approx(spearmanr(popularity[keep], scores[u, keep])[0],
                                       abs=1e-12)
    # Scores equal to popularity: PRU 1 (popular first); reversed: -1; constant: undefined.
    none = np.zeros((1, 30), bool)
    assert popularity_rank_correlation(popularity[None] * 1.0, popularity, none)[0] == 1.0
    assert popularity_rank_correlation(-popularity[None] * 1.0, popularity, none)[0] == -1.0
    assert np.isnan(popularity_rank_correlation(np.ones((1, 30)), popularity, none)[0])


def test_exposure_gap_on_a_hand_computed_example():
    # 6 items, items 0 and 1 are the head. Excluded items are never recommended.
    scores = np.array([[9.0, 8.0, 7.0, 1.0, 2.0, 3.0],
                       [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]])
    excluded = excluded_mask(6, np.array([0, 1, 1]), np.array([0]))  # user 0 excludes item 0
    top = top_k_items(scores, 2, excluded)
    np.testing.assert_array_equal(top, [[1, 2], [5, 4]])
    tail = np.array([False, False, True, True, True, True])
    np.testing.assert_array_equal(tail_share(top, tail), [0.5, 1.0])
    # Test items 2 (tail) and 0 (head): tail share of the tests 0.5, of the lists 0.75.
    tests = np.array([2, 0])
    assert np.mean(tail_share(top, tail) - tail[tests]) == pytest.approx(0.75 - 0.5)


def test_bias_metrics_agree_with_the_base_evaluation_where_they_overlap(data_dir):
    spec = resolve({"method": "aurl", "model": "bprmf", "dataset": "movielens-100k",
                    "partitioner": "single"})
    federation = load_federation(spec)
    data, users = federation.dataset, federation.train_parts[0]
    trainer = make_trainer(spec, data, users)
    torch.manual_seed(0)
    model = trainer.build_model()
    with torch.no_grad():
        metrics = pooled_means([trainer.evaluate(model)])
        scores = trainer.score(model, users).numpy()
    base = pooled_means([super(type(trainer), trainer).evaluate_scores(torch.from_numpy(scores))])
    for name in ("hr@10_full", "ndcg@10_full", "hr@10_full_tail", "ndcg@10_full_head"):
        assert metrics[name] == pytest.approx(base[name], abs=1e-12), name
    # Pooled over two halves of the users = computed at once (the (sum, count) contract).
    halves = [bias_metrics(scores[part], data, users[part], 0.2)
              for part in np.array_split(np.arange(len(users)), 2)]
    for name, value in pooled_means(halves).items():
        assert value == pytest.approx(metrics[name], abs=1e-12), name
    assert metrics["hr@20_full"] >= metrics["hr@10_full"]
    assert metrics["exposure_gap@20"] == pytest.approx(
        metrics["tail_exposure@20"] - metrics["tail_share_test"], abs=1e-12)
    # Inactive users = the bottom 80% by training count; with the active ones, all users.
    with torch.no_grad():
        raw = trainer.evaluate(model)
    assert raw["hr@20_full_inactive/n"] == (~data.active_user_mask(0.2)).sum() == 754
    assert raw["hr@20_full_inactive"] + raw["hr@20_full_active"] == raw["hr@20_full"]


# --- a short real run ---------------------------------------------------------------------------

def test_a_short_aurl_run_on_movielens_learns(data_dir):
    """4 epochs of AURL on BPR-MF through the single-client pipeline: full-ranking HR@10 far
    above a random ranker's (~10 / 1,600 = 0.006)."""
    _, history, _ = run_fake({"method": "aurl", "model": "bprmf", "dataset": "movielens-100k",
                              "partitioner": "single", "fraction": 1.0, "nodes": 1,
                              "rounds": 4, "eval_every": 4, "central.lr": 0.01,
                              "central.batch_size": 4096})  # default lambdas
    assert history[0]["hr@10_full"] < 0.02
    assert history[-1]["hr@10_full"] > 0.04
    assert history[-1]["train_loss"] < history[1]["train_loss"]
    assert -1.0 <= history[-1]["pru"] <= 1.0
