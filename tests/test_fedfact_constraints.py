"""FedFACT post-processing meets its constraints in-sample, and matches fairlearn's optimum.

With ``fedfact.smoothing = "logsumexp"`` the dual objective's gradient in a dual is minus the
plug-in disparity of the randomised classifier softmax(Mᵀη / β) plus ξ
(:func:`fedsim.fairness.calibration.smoothed_max`). For DP the plug-in disparity is the real
one (it uses groups, not labels), so at stationary duals that classifier's gaps on the training
rows are at most ξ, in the group-vs-population form the constraints take (``dp_pop``): globally
for the variants with global duals (g, gl), at every client for those with local ones (l, gl).
The tests rebuild every client's calibrated classifier from the final duals (λ from the last
evaluation message, μ_k from the client's private state) and score it on its training rows by
its expected confusion counts.

The paper's σ_β smoothing with hard argmax predictions (``"softmax"``, β = 0.1) prices no
classifier's disparity: its argmax overshoots (single-client Adult at ξ = 0 keeps an in-sample
group-vs-population gap of about 0.02 with its sign reversed), which
:func:`test_the_papers_softmax_smoothing_overshoots` pins.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from fairlearn.postprocessing import ThresholdOptimizer
from sklearn.base import BaseEstimator, ClassifierMixin

from clients.fedfact import FedFACTPostClient
from fedsim.metrics import expected_confusion_counts, global_and_local
from fedsim.spec import resolve
from tests.helpers import private_arrays, run_fake

TOLERANCE = 1e-3
LSE = {"method": "fedfact_post", "model": "logreg", "fraction": 1.0, "eval_every": 1000,
       "fedfact.smoothing": "logsumexp", "fedfact.beta": 0.02}
# One client holding all of Adult (the centralized case), a weak but real score model.
SINGLE = {**LSE, "dataset": "adult", "partitioner": "single", "fedavg.lr": 0.02,
          "fedavg.batch_size": 1024, "fedfact.pretrain_rounds": 1, "fedfact.xi_global": 0.0,
          "fedfact.xi_local": 0.0, "fedfact.group_calibration": "off"}
# "g" takes one λ step a round (no local steps): it needs more rounds to converge.
SINGLE_ROUNDS = {"g": 21, "l": 11, "gl": 11}
FEDERATED = {**LSE, "dataset": "synthetic-tabular", "partitioner": "dirichlet_capped",
             "partition.alpha": 1.0, "num_clients": 4, "nodes": 2, "rounds": 13,
             "fedavg.lr": 0.1, "fedavg.local_epochs": 3, "fedfact.pretrain_rounds": 3,
             "fedfact.xi_global": 0.02, "fedfact.xi_local": 0.02}


class _State:
    """What a client's private store gives back: its saved arrays (None before any save)."""

    def __init__(self, arrays):
        self.arrays = arrays

    def load(self):
        return self.arrays


def final_duals(strategy, grid) -> dict[str, np.ndarray]:
    """The arrays of the last evaluation message: the frozen model, λ and the pooled counts."""
    last = [m for m in grid.sent if m.metadata.message_type == "evaluate"][-1]
    return {k: v.numpy() for k, v in last.content.array_records["arrays"].items()}


def in_sample(strategy, grid) -> tuple[dict[str, float], dict[str, float]]:
    """Accuracy and gaps (global, local max and mean) on the clients' own training rows of their
    calibrated classifiers (by expected confusion counts) and of the pretrained model's argmax."""
    spec = json.loads(strategy.message_config["spec"])
    shared, private = final_duals(strategy, grid), private_arrays(strategy)
    calibrated, unconstrained = [], []
    for k in range(strategy.num_partitions):
        client = FedFACTPostClient(spec, k)
        probabilities = client.predict_proba(shared, _State(private.get(k)), client.x, client.s)
        calibrated.append(expected_confusion_counts(client.y, probabilities, client.s,
                                                    client.num_classes, client.num_groups))
        unconstrained.append(client.confusion(client.x, client.y, client.s))  # model loaded
    return global_and_local(calibrated), global_and_local(unconstrained)


def run(spec: dict) -> tuple[dict, dict, dict, list[dict]]:
    """(calibrated in-sample gaps, pretrained in-sample gaps, final arrays, history)."""
    strategy, history, grid = run_fake(spec)
    assert not any(r.get("rejected") or r.get("failures") for r in history)
    return *in_sample(strategy, grid), final_duals(strategy, grid), history


@pytest.fixture(scope="module")
def single(data_dir):
    return {variant: run({**SINGLE, "data_dir": str(data_dir), "fedfact.variant": variant,
                          "rounds": rounds})
            for variant, rounds in SINGLE_ROUNDS.items()}


@pytest.fixture(scope="module")
def federated():
    return {variant: run({**FEDERATED, "fedfact.variant": variant}) for variant in ("g", "l", "gl")}


def _assert_meets(gaps: dict[str, float], variant: str, xi: float) -> None:
    if "g" in variant:
        assert gaps["dp_pop_global"] <= xi + TOLERANCE, gaps["dp_pop_global"]
    if "l" in variant:
        assert gaps["dp_pop_local_max"] <= xi + TOLERANCE, gaps["dp_pop_local_max"]


@pytest.mark.parametrize("variant", ["g", "l", "gl"])
@pytest.mark.slow
def test_single_client_meets_exact_parity_in_sample(single, variant):
    gaps, pretrained, _, _ = single[variant]
    _assert_meets(gaps, variant, 0.0)
    # One client: global and local constraints coincide, so every variant meets both.
    assert gaps["dp_pop_global"] == pytest.approx(gaps["dp_pop_local_max"])
    assert pretrained["dp_pop_global"] > 0.05  # far from parity before calibration


@pytest.mark.parametrize("variant", ["g", "l", "gl"])
@pytest.mark.slow
def test_federated_clients_meet_their_constraints_in_sample(federated, variant):
    gaps, pretrained, duals, history = federated[variant]
    _assert_meets(gaps, variant, FEDERATED["fedfact.xi_global"])
    assert history[-1]["dp_local_max_floor"] > 0  # the test-set noise floor is reported
    assert pretrained["dp_pop_local_max"] > 0.05  # there was something to correct
    if variant == "g":  # (with gl the local duals alone may already meet the global bound)
        assert duals["fedfact.lambda"].any()


@pytest.mark.slow
def test_the_papers_softmax_smoothing_overshoots(data_dir):
    """σ_β at β = 0.1 with hard argmax, the paper's: at ξ = 0 the in-sample gap stays > 0.01."""
    gaps, _, _, _ = run({**SINGLE, "data_dir": str(data_dir), "fedfact.variant": "gl",
                      "rounds": 11, "fedfact.smoothing": "softmax", "fedfact.beta": 0.1})
    assert gaps["dp_pop_global"] > 0.01


class _Scores(ClassifierMixin, BaseEstimator):
    """A fitted 'classifier' whose P(Y=1 | x) is x's only column: the model's scores as is."""

    def fit(self, x, y):
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, x):
        return np.c_[1.0 - x[:, 0], x[:, 0]]

    def predict(self, x):
        return (x[:, 0] > 0.5).astype(int)


def _expected(probabilities: np.ndarray, y: np.ndarray, s: np.ndarray) -> tuple[float, float]:
    """Expected accuracy and pairwise DP gap of a randomised binary classifier."""
    rates = [probabilities[s == a, 1].mean() for a in (0, 1)]
    return float(probabilities[np.arange(len(y)), y].mean()), abs(rates[0] - rates[1])


def test_single_client_matches_fairlearns_threshold_optimizer(single, data_dir):
    """Same split, same scores (the pretrained model's), exact DP parity requested: fairlearn's
    ThresholdOptimizer solves the in-sample problem exactly (per-group randomised thresholds), so
    in-sample it can only be matched: FedFACT^g&l (post, logsumexp, β = 0.02) comes within 0.2
    point of its accuracy at a gap as small; its randomisation at β costs the difference (the
    weak one-round model puts many rows near the threshold). On the test rows: within 0.2 point
    at a gap no larger than fairlearn's plus the noise floor. Measured: train 0.7936 vs 0.7952
    (gaps 0.0000 and 0.0000), test 0.7967 vs 0.7974 (gaps 0.0020 and 0.0005, floor 0.0046)."""
    gaps, _, duals, history = single["gl"]
    client = FedFACTPostClient(resolve({**SINGLE, "data_dir": str(data_dir)}), 0)
    model = {k: v for k, v in duals.items() if not k.startswith("fedfact.")}
    client._load(model)
    with torch.no_grad():
        def scores(x):
            return torch.softmax(client.model(torch.from_numpy(x)).double(), 1).numpy()[:, 1:]
        train_scores, test_scores = scores(client.x), scores(client.x_test)
    optimizer = ThresholdOptimizer(estimator=_Scores().fit(None, None),
                                   constraints="demographic_parity", objective="accuracy_score",
                                   prefit=True, predict_method="predict_proba")
    optimizer.fit(train_scores, client.y, sensitive_features=client.s)
    theirs_train = _expected(optimizer._pmf_predict(train_scores, sensitive_features=client.s),
                             client.y, client.s)
    theirs_test = _expected(optimizer._pmf_predict(test_scores, sensitive_features=client.s_test),
                            client.y_test, client.s_test)
    assert theirs_train[1] < TOLERANCE  # fairlearn met the constraint in-sample too
    ours_train = (gaps["accuracy"], gaps["dp_global"])
    final = history[-1]
    assert ours_train[1] <= theirs_train[1] + TOLERANCE
    assert ours_train[0] >= theirs_train[0] - 0.002
    assert final["accuracy"] >= theirs_test[0] - 0.002
    assert final["dp_global"] <= theirs_test[1] + final["dp_global_floor"]
