"""AURL: its regularizers, LightGCN's propagation, the bias metrics and a short real run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr

from fedsim.centralized.bias_eval import bias_metrics
from fedsim.centralized.bpr import BPRSampler
from fedsim.methods.centralized import make_trainer
from fedsim.centralized.representation import mmd2, uniformity
from fedsim.metrics.pooling import add, pooled_means
from fedsim.data import load_dataset
from fedsim.federation import load_federation
from fedsim.metrics.popularity import (excluded_mask, popularity_rank_correlation, tail_share,
                                       top_k_items)
from fedsim.models.lightgcn import LightGCN, normalized_adjacency
from fedsim.spec import resolve


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


# --- the regularizers in a training step --------------------------------------------------------
#
# One AURL step on synthetic-rec through the trainer, with plain SGD (lr 1) and one batch that
# holds every training pair, next to the same step with both lambdas 0: the difference of the
# two models is the regularizer's gradient alone (BPR and L2 are the same in both). It is
# compared with an independent float64 computation of the brief's terms (centralized.md (a)):
# head = the top 20% by training count (ties to the lower id), rows L2-normalised, MMD² with the
# sum of Gaussian kernels of bandwidths 0.5, 1, 2 (biased V-statistic), the head side under a
# stop-gradient, uniformity = log mean over pairs x != y of exp(-t ||x - y||²).

STEP = {"method": "aurl", "model": "bprmf", "dataset": "synthetic-rec", "partitioner": "single",
        "central.dim": 16, "central.batch_size": 1 << 20}


def _sgd_step(overrides):
    """(trainer, model before, model after) of one SGD step (lr 1) of the trainer's loss."""
    spec = resolve({**STEP, **overrides})
    federation = load_federation(spec)
    trainer = make_trainer(spec, federation.dataset, federation.train_parts[0])
    torch.manual_seed(0)
    model = trainer.build_model()
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    trainer.train_epoch(model, torch.optim.SGD(model.parameters(), lr=1.0),
                        np.random.default_rng(0))
    assert len(trainer.sampler) <= spec["central.batch_size"]  # one batch: one step
    return trainer, before, {k: v.detach().clone() for k, v in model.state_dict().items()}


def _top_fifth(counts):
    order = sorted(range(len(counts)), key=lambda i: (-counts[i], i))
    head = np.zeros(len(counts), bool)
    head[order[:round(0.2 * len(counts))]] = True
    return head


def _kernel(x, y):
    squared = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    return sum(torch.exp(-squared / (2 * s * s)) for s in (0.5, 1.0, 2.0))


def _mmd2(x, y):
    return _kernel(x, x).mean() + _kernel(y, y).mean() - 2 * _kernel(x, y).mean()


def _uniformity(z, t):
    squared = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
    off = ~torch.eye(len(z), dtype=torch.bool)
    return torch.log(torch.exp(-t * squared[off]).mean())


def _reference_regularizer_gradients(trainer, before, term):
    """(user grad, item grad, head items, active users) of L_GA or L_GU at `before`, float64."""
    data = trainer.data
    head_items = _top_fifth(np.bincount(trainer.sampler.items, minlength=data.num_items))
    active_users = _top_fifth(np.bincount(trainer.sampler.users, minlength=data.num_users))
    users, positives, negatives = next(trainer.sampler.epoch(np.random.default_rng(0), 1 << 20))
    batch_users = np.unique(users)
    batch_items = np.unique(np.concatenate([positives, negatives]))
    tables = [before["user.weight"].double().requires_grad_(),
              before["item.weight"].double().requires_grad_()]
    loss = tables[0].new_zeros(())
    for table, rows, head in ((tables[0], batch_users, active_users),
                              (tables[1], batch_items, head_items)):
        z = torch.nn.functional.normalize(table[torch.from_numpy(rows)], dim=1)
        is_head = torch.from_numpy(head[rows])
        if term == "ga":
            loss = loss + _mmd2(z[~is_head], z[is_head].detach())
        else:
            loss = loss + 0.5 * _uniformity(z, trainer.spec["aurl.t"])
    return (*torch.autograd.grad(loss, tables), head_items, active_users, batch_items)


def _relative(got, want):
    return float((got - want).norm() / want.norm())


def test_group_alignment_moves_the_tail_toward_the_fixed_head_in_a_training_step():
    """λ_GA's part of a step is λ_GA x the gradient of MMD²(tail, sg head), items and users:
    head items and active users get no gradient from it at all (their rows equal the plain
    step's bit for bit), every tail item and inactive user in the batch moves, and the move
    lowers the MMD² between the two groups."""
    lam = 0.5
    trainer, before, plain = _sgd_step({"aurl.lambda_ga": 0.0, "aurl.lambda_gu": 0.0})
    _, _, aligned = _sgd_step({"aurl.lambda_ga": lam, "aurl.lambda_gu": 0.0})
    users_grad, items_grad, head_items, active_users, batch_items = \
        _reference_regularizer_gradients(trainer, before, "ga")
    moved = {k: (plain[k] - aligned[k]).double() for k in plain}  # = lr x λ x grad L_GA
    assert torch.equal(aligned["item.weight"][head_items], plain["item.weight"][head_items])
    assert torch.equal(aligned["user.weight"][active_users], plain["user.weight"][active_users])
    tail_in_batch = np.setdiff1d(batch_items, np.flatnonzero(head_items))
    assert len(tail_in_batch) > 100 and (~active_users).sum() > 100
    assert (moved["item.weight"][tail_in_batch].norm(dim=1) > 0).all()
    assert (moved["user.weight"][~active_users].norm(dim=1) > 0).all()
    assert _relative(moved["item.weight"], lam * items_grad) < 1e-3
    assert _relative(moved["user.weight"], lam * users_grad) < 1e-3
    # The tail moved toward the head: their MMD² fell (the head did not move).
    normalized = lambda t: torch.nn.functional.normalize(t.double(), dim=1)
    tail_items = torch.from_numpy(tail_in_batch)
    gap = lambda t: _mmd2(normalized(t[tail_items]), normalized(t[torch.from_numpy(head_items)]))
    step = before["item.weight"] - 0.01 * moved["item.weight"].float() / lam
    assert gap(step) < gap(before["item.weight"])


def test_global_uniformity_in_a_training_step_is_its_gradient_on_all_rows():
    """λ_GU's part of a step is λ_GU x the gradient of ½(unif(users) + unif(items)) over the
    batch's rows, head and tail alike (no stop-gradient)."""
    lam = 0.5
    trainer, before, plain = _sgd_step({"aurl.lambda_ga": 0.0, "aurl.lambda_gu": 0.0})
    _, _, spread = _sgd_step({"aurl.lambda_ga": 0.0, "aurl.lambda_gu": lam})
    users_grad, items_grad, head_items, active_users, _ = \
        _reference_regularizer_gradients(trainer, before, "gu")
    moved = {k: (plain[k] - spread[k]).double() for k in plain}
    assert _relative(moved["item.weight"], lam * items_grad) < 1e-3
    assert _relative(moved["user.weight"], lam * users_grad) < 1e-3
    assert (moved["item.weight"][head_items].norm(dim=1) > 0).any()


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
    data = load_dataset("movielens-100k", protocol="recbole")
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
        metrics = pooled_means(trainer.evaluate(model))
        scores = trainer.score(model, users).numpy()
    base = pooled_means(super(type(trainer), trainer).evaluate_scores(torch.from_numpy(scores)))
    for name in ("hr@10_full", "ndcg@10_full", "hr@10_full_tail", "ndcg@10_full_head"):
        assert metrics[name] == pytest.approx(base[name], abs=1e-12), name
    # Pooled over two halves of the users = computed at once (the (sum, count) contract).
    halves = [bias_metrics(scores[part], data, users[part], 0.2)
              for part in np.array_split(np.arange(len(users)), 2)]
    for name, value in pooled_means(add(halves)).items():
        assert value == pytest.approx(metrics[name], abs=1e-12), name
    assert metrics["hr@20_full"] >= metrics["hr@10_full"]
    assert metrics["exposure_gap@20"] == pytest.approx(
        metrics["tail_exposure@20"] - metrics["tail_share_test"], abs=1e-12)
    # Inactive users = the bottom 80% by training count; with the active ones, all users.
    with torch.no_grad():
        raw = trainer.evaluate(model)
    assert raw["hr@20_full_inactive/n"] == (~data.active_user_mask(0.2)).sum() == 754
    assert raw["hr@20_full_inactive"] + raw["hr@20_full_active"] == raw["hr@20_full"]


# --- against the plain backbone on real data -------------------------------------------------------

def _trained_on_movielens(lambda_ga, lambda_gu, epochs=2):
    """(trainer, model) after `epochs` of BPR-MF on ML-100K with these weights, same init."""
    spec = resolve({"method": "aurl", "model": "bprmf", "dataset": "movielens-100k",
                    "partitioner": "single", "central.lr": 0.01, "central.batch_size": 4096,
                    "aurl.lambda_ga": lambda_ga, "aurl.lambda_gu": lambda_gu})
    federation = load_federation(spec)
    trainer = make_trainer(spec, federation.dataset, federation.train_parts[0])
    torch.manual_seed(0)
    model = trainer.build_model()
    optimizer = trainer.make_optimizer(model)
    for epoch in range(epochs):
        trainer.train_epoch(model, optimizer, np.random.default_rng(epoch))
    return trainer, model


@pytest.mark.slow
def test_aurl_closes_the_tail_head_gap_that_bpr_mf_leaves_on_movielens(data_dir):
    """Two epochs from the same initial model and batches, default weights against both 0: the
    MMD² between the tail and head representations (items, and inactive vs active users) is a
    fraction of plain BPR-MF's, the popularity-rank correlation (PRU) falls, and AURL still
    ranks far above chance (full-ranking HR@10; random ~ 10 / 1,682 = 0.006). Measured: item
    MMD² 0.98 -> 0.033, user 0.19 -> 0.014, PRU 0.90 -> 0.38, HR@10 0.119 -> 0.073."""
    results = {}
    for name, weights in (("plain", (0.0, 0.0)), ("aurl", (1.0, 0.1))):
        trainer, model = _trained_on_movielens(*weights)
        with torch.no_grad():
            users, items = (F.normalize(table, dim=1) for table in model())
            metrics = pooled_means(trainer.evaluate(model))
        tail, inactive = trainer.tail_items, trainer.inactive_users
        results[name] = {"items": mmd2(items[tail], items[~tail]).item(),
                         "users": mmd2(users[inactive], users[~inactive]).item(),
                         "pru": metrics["pru"], "hr": metrics["hr@10_full"]}
    plain, aurl = results["plain"], results["aurl"]
    assert aurl["items"] < plain["items"] / 5 and aurl["users"] < plain["users"] / 5
    assert aurl["pru"] < plain["pru"] - 0.2
    assert aurl["hr"] > 0.04
