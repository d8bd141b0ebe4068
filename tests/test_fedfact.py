"""FedFACT: calibration math by hand, dual steps, L1-ball projection, post-processing end to end."""

import itertools
import json
import tempfile

import numpy as np
import pytest
import torch

from fedsim.app.client_app import app as client_app
from fedsim.fairness import calibration as cal
from fedsim.federation import load_federation
from fedsim.methods import METHODS
from fedsim.metrics import fairness_gaps
from fedsim.protocol import unpack_arrays
from fedsim.spec import resolve
from strategies.fedfact import FedFACTPost
from tests.fake_grid import FakeGrid
from tests.helpers import private_arrays, run_fake

# One client of a 2-group, 2-class federation: own n_k[a, y] and pooled N[a, y] (n = 120).
OWN = np.array([[30, 10], [10, 10]])
POOLED = np.array([[50, 30], [30, 10]])

POST = {"dataset": "synthetic-tabular", "method": "fedfact_post", "model": "logreg",
        "partitioner": "dirichlet", "num_clients": 4, "fraction": 1.0, "nodes": 2,
        "rounds": 6, "fedavg.lr": 0.1, "fedavg.local_epochs": 3,
        "fedfact.pretrain_rounds": 3}


def test_dp_and_eop_constraint_matrices_by_hand():
    d_global, d_local = cal.constraint_matrices(OWN, POOLED, "dp")
    assert d_global.shape == d_local.shape == (4, 2, 2, 2)  # u = (a', y): 2 groups x 2 classes
    u = 1  # (a' = 0, y = 1): P(Ŷ=1 | A=0) − P(Ŷ=1)
    # Global: column 1 = p_{k|a'} 1[a=a'] − p_{a,k}: a=0: 40/80 − 40/120 = 1/6; a=1: −20/120.
    np.testing.assert_allclose(d_global[u, 0], [[0, 1 / 6], [0, 1 / 6]])
    np.testing.assert_allclose(d_global[u, 1], [[0, -1 / 6], [0, -1 / 6]])
    # Local: column 1 = 1[a=a'] − p_{a|k}: a=0: 1 − 40/60 = 1/3; a=1: −20/60.
    np.testing.assert_allclose(d_local[u, 0], [[0, 1 / 3], [0, 1 / 3]])
    np.testing.assert_allclose(d_local[u, 1], [[0, -1 / 3], [0, -1 / 3]])
    d_global, d_local = cal.constraint_matrices(OWN, POOLED, "eop")
    # Global EOP, entry (1,1): p_{a',k}/p_{a',y} 1[a=a'] − p_{a,k}/p_y: (40/30 − 40/40), −20/40.
    np.testing.assert_allclose(d_global[u, :, 1, 1], [4 / 3 - 1, -0.5])
    # Local: p_{a',k}/p_{a',y,k} 1[a=a'] − p_{a,k}/p_{y,k}: (40/10 − 40/20), −20/20.
    np.testing.assert_allclose(d_local[u, :, 1, 1], [2.0, -1.0])
    assert np.count_nonzero(d_global[u]) == 2  # only the (y, y) entries


def test_cost_matrix_by_hand_with_plus_sign_for_the_local_term():
    d_global, d_local = (torch.from_numpy(d) for d in cal.constraint_matrices(OWN, POOLED, "dp"))
    lam = torch.zeros(2, 4, dtype=torch.float64)
    mu = torch.zeros(2, 4, dtype=torch.float64)
    lam[0, 1] = 0.3  # Λ_(0,1) = +0.3
    mu[1, 1] = 0.6  # Μ_(0,1) = −0.6: group 0 is selected too little at this client
    share = torch.tensor([40 / 120, 20 / 120], dtype=torch.float64)  # p_{a,k}
    cost = cal.cost_matrix(lam, mu, d_global, d_local, share).numpy()
    # M(0) column 1: −3 (0.3/6 − 0.6/3) = +0.45; M(1): −6 (−0.3/6 + 0.6/3) = −0.9.
    np.testing.assert_allclose(cost[0], [[1, 0.45], [0, 1.45]])
    np.testing.assert_allclose(cost[1], [[1, -0.9], [0, 0.1]])
    # The brief's explicit DP form:
    # δ_ij − Λ_{a,j}/p_a + Σ Λ_{a',j} − Μ_{a,j}/p_{a,k} + Σ Μ_{a',j}/p_k.
    assert cost[0, 0, 1] == pytest.approx(-0.3 / (80 / 120) + 0.3 + 0.6 / (40 / 120) - 0.6 / 0.5)


@pytest.mark.parametrize("criterion", ["dp", "eop", "eo"])
def test_disparities_sum_to_the_global_and_give_the_local_group_vs_population_gaps(criterion):
    rng = np.random.default_rng(0)
    confusion = rng.integers(1, 30, size=(3, 2, 3, 3))  # 3 clients, 2 groups, 3 classes
    own = confusion.sum(3)  # n_k[a, y] of the rows the confusions count
    pooled = own.sum(0)
    shares = [cal.disparities(cal.constraint_matrices(own[k], pooled, criterion)[0],
                              confusion[k]) for k in range(3)]
    local = cal.disparities(cal.constraint_matrices(own[0], pooled, criterion)[1], confusion[0])
    expected_pop = {"dp": "dp_pop", "eop": "eop_pop", "eo": "eo_pop"}[criterion]
    assert np.abs(np.sum(shares, axis=0)).max() == pytest.approx(
        fairness_gaps(confusion.sum(0))[expected_pop])
    assert np.abs(local).max() == pytest.approx(fairness_gaps(confusion[0])[expected_pop])


def test_l1_ball_projection_known_cases_and_against_brute_force():
    np.testing.assert_allclose(cal.project_l1_ball(np.array([3.0, 1.0, -1.0]), 2.0), [2, 0, 0])
    np.testing.assert_allclose(cal.project_l1_ball(np.array([0.5, -1.0, 0.2]), 2.0),
                               [0.5, 0, 0.2])
    np.testing.assert_allclose(cal.project_l1_ball(np.array([[1.0, 1.0], [1.0, 0.0]]), 1.5),
                               [[0.5, 0.5], [0.5, 0]])
    rng = np.random.default_rng(1)
    # Brute force: the closest of a fine grid of the feasible set {x >= 0, sum <= 1} in 2-D.
    grid = np.array([(a, b) for a, b in itertools.product(np.linspace(0, 1, 201), repeat=2)
                     if a + b <= 1 + 1e-12])
    for _ in range(20):
        v = rng.normal(scale=1.5, size=2)
        x = cal.project_l1_ball(v, 1.0)
        assert x.min() >= 0 and x.sum() <= 1 + 1e-12
        best = grid[np.argmin(((grid - v) ** 2).sum(1))]
        assert np.linalg.norm(x - v) <= np.linalg.norm(best - v) + 1e-9


def test_a_global_dual_step_lowers_the_violated_disparity():
    rng = np.random.default_rng(0)
    groups = (rng.random(4000) < 0.4).astype(np.int64)
    p1 = np.clip(rng.beta(2, 3, 4000) + 0.2 * (groups == 0), 0, 1)  # group 0 scores higher
    labels = (rng.random(4000) < p1).astype(np.int64)
    eta = torch.tensor(np.stack([1 - p1, p1], 1))
    own = np.zeros((2, 2), np.int64)
    np.add.at(own, (groups, labels), 1)
    d_global, d_local = (torch.from_numpy(d) for d in cal.constraint_matrices(own, own, "dp"))
    share = torch.from_numpy(own.sum(1) / own.sum())

    def global_disparity(lam):
        cost = cal.cost_matrix(lam, torch.zeros_like(lam), d_global, d_local, share)
        predicted = cal.calibrated_scores(eta, torch.from_numpy(groups), cost).argmax(1)
        confusion = np.zeros((2, 2, 2))
        np.add.at(confusion, (groups, labels, predicted.numpy()), 1)
        return cal.disparities(d_global.numpy(), confusion)

    lam = torch.zeros(2, 4, dtype=torch.float64, requires_grad=True)
    before = global_disparity(lam.detach())
    assert before[1] > 0.1  # (a'=0, y=1): group 0 is selected more than the population
    objective = cal.client_objective(lam, torch.zeros(2, 4, dtype=torch.float64),
                                     eta, torch.from_numpy(groups), d_global, d_local, share,
                                     client_share=1.0, xi_global=0.0, xi_local=0.0, beta=0.1)
    (gradient,) = torch.autograd.grad(objective, lam)
    stepped = cal.project_l1_ball(lam.detach().numpy() - 0.1 * gradient.numpy(), 5.0)
    assert stepped[0, 1] > 0  # the "+" dual of the violated constraint rises
    after = global_disparity(torch.from_numpy(stepped))
    assert 0 <= after[1] < before[1] - 0.03


def _private_mu(strategy):
    return [arrays["mu"] for arrays in private_arrays(strategy).values()]


@pytest.mark.parametrize("criterion", ["dp", "eo"])
@pytest.mark.slow
def test_post_processing_with_loose_constraints_reproduces_the_fedavg_argmax(criterion):
    strategy, history, grid = run_fake({**POST, "fedfact.xi_global": 1.0,
                                        "fedfact.xi_local": 1.0, "fedfact.criterion": criterion,
                                        "fedfact.group_calibration": "off"})
    assert not strategy.lam.any()
    mus = _private_mu(strategy)
    assert len(mus) == 4 and not any(mu.any() for mu in mus)
    pretrained, calibrated = history[3], history[-1]
    for key in ("accuracy", "dp_global", "dp_local_max", "eo_global", "eop_pop_local_mean"):
        assert calibrated[key] == pretrained[key], key


@pytest.mark.slow
def test_exact_parity_shrinks_the_gaps_and_duals_stay_private():
    strategy, history, grid = run_fake({**POST, "fedfact.xi_global": 0.0,
                                        "fedfact.xi_local": 0.0})
    fedavg, fair = history[3], history[-1]
    assert fedavg["dp_global"] > 0.05
    assert fair["dp_global"] < 0.3 * fedavg["dp_global"]
    assert fair["dp_local_max"] < 0.5 * fedavg["dp_local_max"]
    assert fair["accuracy"] > fedavg["accuracy"] - 0.05
    # The counts were asked once per client; only λ's gradient goes up in the dual stage.
    asked = [m for m in grid.sent if m.metadata.message_type == "query.counts"]
    assert sum(len(m.content.config_records["config"]["partition-ids"]) for m in asked) == 4
    mus = _private_mu(strategy)
    assert len(mus) == 4 and all(mu.any() for mu in mus)
    _assert_no_reply_holds(grid, mus)
    dual_replies = [r for r in grid.replies if r.metadata.message_type == "train"][-2:]
    names = {name for r in dual_replies
             for upload in unpack_arrays(r.content.array_records["client-arrays"]).values()
             for name in upload}
    assert names == {"grad_lambda"}


@pytest.mark.slow
def test_equal_opportunity_post_processing_shrinks_the_local_gaps():
    # Needs the per-group score shift: with the attribute-blind FedAvg score the plug-in TPRs
    # are biased and the gaps grow instead.
    _, history, _ = run_fake({**POST, "fedfact.criterion": "eop", "fedfact.xi_global": 0.0,
                              "fedfact.xi_local": 0.0})
    fedavg, fair = history[3], history[-1]
    assert fair["eop_pop_local_max"] < 0.6 * fedavg["eop_pop_local_max"]
    assert fair["eop_pop_global"] < 0.02
    assert fair["accuracy"] > fedavg["accuracy"] - 0.02


@pytest.mark.slow
def test_post_processing_on_adult_cuts_the_global_dp_gap(data_dir):
    _, history, _ = run_fake({"method": "fedfact_post", "dataset": "adult", "model": "logreg",
                              "partitioner": "dirichlet", "num_clients": 5, "fraction": 1.0,
                              "rounds": 5, "data_dir": str(data_dir), "fedavg.lr": 0.005,
                              "fedavg.batch_size": 256, "fedfact.pretrain_rounds": 2,
                              "fedfact.xi_global": 0.0, "fedfact.xi_local": 0.0})
    fedavg, fair = history[2], history[-1]
    assert fedavg["round"] == 2 and fair["round"] == 5
    assert fair["dp_global"] < 0.5 * fedavg["dp_global"]
    assert fair["accuracy"] > fedavg["accuracy"] - 0.05


def _assert_no_reply_holds(grid, private):
    for reply in grid.replies:
        for record in reply.content.array_records.values():
            for name, array in record.items():
                assert not name.split("/")[-1].startswith(("mu", "phi", "w")), name
                values = array.numpy()
                assert not any(values.shape == p.shape and np.array_equal(values, p)
                               for p in private), name


@pytest.mark.slow
def test_in_processing_trains_fairer_than_fedavg_and_keeps_personal_models_private():
    base = {**POST, "rounds": 8, "fedfact.xi_global": 0.0, "fedfact.xi_local": 0.0}
    del base["fedfact.pretrain_rounds"]
    _, fedavg, _ = run_fake({**base, "method": "fedavg"})
    strategy, fair, grid = run_fake({**base, "method": "fedfact_in"})
    assert strategy.lam.any()
    assert fair[-1]["dp_global"] < 0.5 * fedavg[-1]["dp_global"]
    assert fair[-1]["dp_local_max"] < 0.7 * fedavg[-1]["dp_local_max"]
    assert fair[-1]["accuracy"] > fedavg[-1]["accuracy"] - 0.05
    private = [array for arrays in private_arrays(strategy).values() for array in arrays.values()]
    assert len(private) == 4 * 4  # per client: mu, w, and the personal logreg's weight and bias
    _assert_no_reply_holds(grid, private)


def test_post_processing_needs_a_round_after_pretraining():
    from fedsim.spec import SpecError

    with pytest.raises(SpecError, match="fedfact.pretrain_rounds = 6 leaves no post-processing"):
        resolve({**POST, "fedfact.pretrain_rounds": 6})


def test_in_processing_global_dual_ascends_on_the_pooled_residual(monkeypatch):
    from fedsim.protocol import ClientReply
    from strategies.fedfact_in import FedFACTIn

    strategy = FedFACTIn(num_partitions=2, xi_global=0.1, dual_lr=1.0)
    strategy.lam = np.zeros((2, 1))
    replies = [ClientReply(p, {"w": np.ones(1), "disparity_global": np.array([share])},
                           {"num-examples": 1, "train-loss": 0.0})
               for p, share in ((0, 0.15), (1, 0.05))]
    monkeypatch.setattr(strategy, "collect", lambda _: replies)
    arrays, _ = strategy.aggregate_train(1, [])
    # Σ_k g_k − ξ = 0.2 − 0.1 (the paper's Σ_k (g_k − ξ) would give 0.0); −Σ_k g_k − ξ < 0.
    np.testing.assert_allclose(strategy.lam, [[0.1], [0.0]])
    assert list(arrays.keys()) == ["w"]  # the shares are not averaged into the model


@pytest.mark.parametrize("method, strategy_class, counts_round", [
    ("fedfact_post", "FedFACTPost", 4), ("fedfact_in", "FedFACTIn", 1)])
def test_no_valid_count_reply_is_an_error_naming_the_query(monkeypatch, method, strategy_class,
                                                           counts_round):
    """Every client failing ``query.counts`` used to crash at ``pooled.shape`` (an empty sum)."""
    from clients.fedfact import FedFACTClient

    def fail(self, shared, own, state, server_round):
        raise OSError("the counts are unreadable")

    monkeypatch.setattr(FedFACTClient, "query_counts", fail)
    with pytest.raises(RuntimeError, match=rf"{strategy_class}: no valid reply to query.counts in "
                                           rf"round {counts_round} from the 4 clients asked: "
                                           r".*the counts are unreadable"):
        run_fake({**POST, "method": method, "rounds": 4})


BAD_COUNTS = {"negative": lambda c: -c, "not integers": lambda c: c + 0.5,
              "another shape": lambda c: c[:, :1].copy()}


@pytest.mark.parametrize("bad", list(BAD_COUNTS))
@pytest.mark.slow
def test_a_bad_count_reply_is_rejected_and_the_other_clients_pooled(monkeypatch, bad):
    from clients.fedfact import FedFACTClient, FedFACTPostClient
    from fedsim.messages.common import COUNT_TABLE

    original = FedFACTClient.query_counts

    def one_bad(self, shared, own, state, server_round):
        arrays, metrics = original(self, shared, own, state, server_round)
        if self.partition_id == 1:
            arrays = {COUNT_TABLE: BAD_COUNTS[bad](arrays[COUNT_TABLE])}
        return arrays, metrics

    monkeypatch.setattr(FedFACTClient, "query_counts", one_bad)
    spec = {**POST, "rounds": 4}
    strategy, history, _ = run_fake(spec)
    expected = sum(FedFACTPostClient(resolve(spec), p).group_label_counts() for p in (0, 2, 3))
    np.testing.assert_array_equal(strategy.pooled, expected)
    assert [r["rejected"] for r in history] == [0, 0, 0, 0, 1]  # the counts, asked in round 4


def _metrics(history):
    return [{k: v for k, v in r.items() if not k.endswith("_seconds")} for r in history]


def test_the_strategy_sends_its_own_settings_to_the_clients():
    """Settings both sides use travel once: built with variant "l", criterion "eop" and another
    pretraining length, FedFACT post runs the same as when the spec says so too, though the
    spec its messages carry says "gl", "dp" and 3 (the clients take the strategy's)."""
    own = {"fedfact.variant": "l", "fedfact.criterion": "eop", "fedfact.pretrain_rounds": 2,
           "fedfact.dual_lr": 0.5}
    _, told, _ = run_fake({**POST, **own})

    spec = resolve(POST)
    spec["out_dir"] = tempfile.mkdtemp(prefix="fedsim-test-")
    federation = load_federation(spec)
    history: list[dict] = []
    strategy = FedFACTPost(variant="l", criterion="eop", pretrain_rounds=2, dual_lr=0.5,
                           num_partitions=federation.num_clients, num_nodes=2,
                           fraction_train=1.0, seed=spec["seed"],
                           message_config={"spec": json.dumps(spec), "run-id": "settings"},
                           on_round=history.append)
    assert json.loads(strategy.message_config["spec"])["fedfact.variant"] == "gl"
    strategy.start(FakeGrid(client_app, 2), METHODS["fedfact_post"].initial_arrays(
        spec, federation), num_rounds=spec["rounds"])
    assert _metrics(history) == _metrics(told)
    assert "eop_local_max" in history[-1]
