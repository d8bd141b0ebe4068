"""Fairness metrics: a hand-computed example, fairlearn cross-checks, exact pooling of counts,
noise floors against exact binomial expectations."""

from __future__ import annotations

import numpy as np
import pytest
from fairlearn.metrics import (
    demographic_parity_difference,
    equal_opportunity_difference,
    equalized_odds_difference,
)
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from scipy.stats import binom

from fedsim.metrics import (
    GAP_KEYS,
    confusion_counts,
    expected_confusion_counts,
    fairness_gaps,
    global_and_local,
    noise_floors,
)

# counts[a, i, j] = #(A=a, Y=i, Ŷ=j), binary.
# group 0: Y=0 -> 5 predicted 0, 1 predicted 1; Y=1 -> 1 predicted 0, 3 predicted 1 (10 rows)
# group 1: Y=0 -> 1 predicted 0, 4 predicted 1; Y=1 -> 3 predicted 0, 2 predicted 1 (10 rows)
HAND_COUNTS = np.array([[[5, 1], [1, 3]], [[1, 4], [3, 2]]])


def test_hand_computed_binary_example():
    gaps = fairness_gaps(HAND_COUNTS)
    # P(Ŷ=1|A=0) = 4/10, P(Ŷ=1|A=1) = 6/10, P(Ŷ=1) = 10/20
    assert gaps["dp"] == pytest.approx(0.2)
    assert gaps["dp_pop"] == pytest.approx(0.1)
    # TPR_1: 3/4 vs 2/5 (gap 0.35); TPR_0 = P(Ŷ=0|Y=0): 5/6 vs 1/5 (gap 19/30)
    assert gaps["eop"] == pytest.approx(19 / 30)
    # population TPR_1 = 5/9, TPR_0 = 6/11; the largest deviation is |1/5 - 6/11| = 19/55
    assert gaps["eop_pop"] == pytest.approx(19 / 55)
    # FPR_1 = P(Ŷ=1|Y=0): 1/6 vs 4/5 (19/30); FPR_0 = P(Ŷ=0|Y=1): 1/4 vs 3/5 (0.35)
    assert gaps["eo"] == pytest.approx(19 / 30)
    # population FPR_1 = 5/11: |4/5 - 5/11| = 19/55; FPR_0 = 4/9: at most 7/36
    assert gaps["eo_pop"] == pytest.approx(19 / 55)
    assert gaps["accuracy"] == pytest.approx(11 / 20)


def test_unsupported_groups_and_cells_are_left_out():
    assert all(fairness_gaps(HAND_COUNTS[:1])[key] == 0.0 for key in GAP_KEYS)  # one group: no pair
    only_group_0 = np.stack([HAND_COUNTS[0], np.zeros((2, 2), dtype=int)])
    assert all(fairness_gaps(only_group_0)[key] == 0.0 for key in GAP_KEYS)  # empty group left out
    # group 1 has no Y=0 rows: TPR_0 and FPR_1 are undefined for it; TPR_1 3/4 vs 2/5 remains
    no_negatives = np.array([HAND_COUNTS[0], [[0, 0], [3, 2]]])
    gaps = fairness_gaps(no_negatives)
    assert gaps["eop"] == pytest.approx(0.35)
    assert gaps["eo"] == pytest.approx(0.35)  # FPR_0 = P(Ŷ=0|Y=1): 1/4 vs 3/5
    assert gaps["dp"] == pytest.approx(0.0)  # 4/10 vs 2/5


def test_confusion_counts():
    y_true, y_pred = np.array([0, 1, 2, 2]), np.array([0, 2, 2, 1])
    sensitive = np.array([1, 0, 1, 1])
    counts = confusion_counts(y_true, y_pred, sensitive, num_classes=3, num_groups=3)
    expected = np.zeros((3, 3, 3), dtype=np.int64)
    expected[1, 0, 0] = expected[0, 1, 2] = expected[1, 2, 2] = expected[1, 2, 1] = 1
    np.testing.assert_array_equal(counts, expected)
    assert counts.dtype == np.int64
    with pytest.raises(ValueError, match=r"y_pred has values in \[1, 3\]; allowed is \[0, 3\)"):
        confusion_counts(y_true, y_pred + 1, sensitive, num_classes=3, num_groups=3)
    with pytest.raises(ValueError, match="must be 1-D of equal length"):
        confusion_counts(y_true, y_pred[:3], sensitive, num_classes=3, num_groups=3)
    with pytest.raises(ValueError, match="counts are all zero"):
        fairness_gaps(np.zeros((2, 2, 2)))


@given(seed=st.integers(0, 2**32 - 1), num_groups=st.integers(2, 4), n=st.integers(50, 400))
@settings(deadline=None, max_examples=40)
@pytest.mark.slow
def test_binary_gaps_match_fairlearn(seed, num_groups, n):
    rng = np.random.default_rng(seed)
    y_true, y_pred = rng.integers(0, 2, n), rng.integers(0, 2, n)
    sensitive = rng.integers(0, num_groups, n)
    counts = confusion_counts(y_true, y_pred, sensitive, 2, num_groups)
    assume(counts.sum(axis=2).min() > 0)  # every (group, class) cell supported, as fairlearn needs
    gaps = fairness_gaps(counts)

    def fairlearn(metric, method, flip=False):
        truth, pred = (1 - y_true, 1 - y_pred) if flip else (y_true, y_pred)
        return metric(truth, pred, sensitive_features=sensitive, method=method)

    for method, suffix in (("between_groups", ""), ("to_overall", "_pop")):
        # The selection-rate gap of class 1 equals that of class 0, so the max over classes
        # is fairlearn's DP difference.
        dp = fairlearn(demographic_parity_difference, method)
        assert gaps["dp" + suffix] == pytest.approx(dp)
        # fairlearn's EO is max(TPR gap, FPR gap) of the positive class. Our EO maxes over both
        # classes, but for binary labels TPR_0 = 1 - FPR_1 and FPR_0 = 1 - TPR_1 (also for the
        # population), so class 0 adds the same two gaps.
        assert gaps["eo" + suffix] == pytest.approx(fairlearn(equalized_odds_difference, method))
        # fairlearn's equal opportunity is the positive class's TPR gap; ours also takes class
        # 0's TPR (= TNR), which is fairlearn's on flipped labels and predictions.
        positive = fairlearn(equal_opportunity_difference, method)
        negative = fairlearn(equal_opportunity_difference, method, flip=True)
        assert gaps["eop" + suffix] == pytest.approx(max(positive, negative))
        assert gaps["eop" + suffix] == pytest.approx(gaps["eo" + suffix])


def test_pooled_client_counts_give_the_global_metrics():
    rng = np.random.default_rng(5)
    n, num_classes, num_groups, num_clients = 3000, 3, 4, 6
    y_true, y_pred = rng.integers(0, num_classes, n), rng.integers(0, num_classes, n)
    sensitive, client = rng.integers(0, num_groups, n), rng.integers(0, num_clients, n)
    per_client = [
        confusion_counts(y_true[rows], y_pred[rows], sensitive[rows], num_classes, num_groups)
        for rows in (client == k for k in range(num_clients))
    ]
    result = global_and_local(per_client)
    whole = fairness_gaps(confusion_counts(y_true, y_pred, sensitive, num_classes, num_groups))
    local = [fairness_gaps(counts) for counts in per_client]
    suffixes = ("global", "local_max", "local_mean")
    expected_keys = {"accuracy"} | {f"{key}_{suffix}" for key in GAP_KEYS for suffix in suffixes}
    assert set(result) == expected_keys
    assert result["accuracy"] == pytest.approx(whole["accuracy"])
    for key in GAP_KEYS:
        assert result[f"{key}_global"] == pytest.approx(whole[key])
        assert result[f"{key}_local_max"] == pytest.approx(max(gaps[key] for gaps in local))
        assert result[f"{key}_local_mean"] == pytest.approx(np.mean([gaps[key] for gaps in local]))
    with pytest.raises(ValueError, match="same shape"):
        global_and_local([per_client[0], per_client[1][:2]])


def test_multiclass_multigroup_sanity():
    rng = np.random.default_rng(2)
    n, num_classes = 3000, 3
    sensitive = np.repeat(np.arange(3), n // 3)
    y_true = rng.integers(0, num_classes, n)

    def gaps(y_pred):
        return fairness_gaps(confusion_counts(y_true, y_pred, sensitive, num_classes, 3))

    perfect = gaps(y_true)  # error rates equal (zero) everywhere; DP = base-rate differences
    assert perfect["accuracy"] == 1.0
    assert perfect["eop"] == perfect["eo"] == perfect["eo_pop"] == 0.0
    class_counts = [np.bincount(y_true[sensitive == a], minlength=3) for a in range(3)]
    base_rates = np.array(class_counts) / (n // 3)
    assert perfect["dp"] == pytest.approx((base_rates.max(0) - base_rates.min(0)).max())

    constant = gaps(np.zeros(n, dtype=int))  # ignores everyone equally: no gap of any kind
    assert all(constant[key] == 0.0 for key in GAP_KEYS)
    assert constant["accuracy"] == pytest.approx(np.mean(y_true == 0))

    by_group = gaps(sensitive)  # predicts the group: P(Ŷ=y|A=a) = 1[y=a], P(Ŷ=y) = 1/3
    assert by_group["dp"] == 1.0 and by_group["dp_pop"] == pytest.approx(2 / 3)
    assert by_group["eop"] == by_group["eo"] == 1.0


# --- noise floors ----------------------------------------------------------------------------


def _abs_gap_pmf(n0: int, n1: int, p: float) -> dict[float, float]:
    """Exact distribution of |X0/n0 − X1/n1|, Xa ~ Binomial(na, p) independent."""
    pmf: dict[float, float] = {}
    for x0, p0 in enumerate(binom.pmf(np.arange(n0 + 1), n0, p)):
        for x1, p1 in enumerate(binom.pmf(np.arange(n1 + 1), n1, p)):
            gap = round(abs(x0 / n0 - x1 / n1), 12)
            pmf[gap] = pmf.get(gap, 0.0) + p0 * p1
    return pmf


def _mean(pmf: dict[float, float]) -> float:
    return sum(value * mass for value, mass in pmf.items())


def _mean_of_max(pmfs: list[dict[float, float]]) -> float:
    """E[max_k G_k] of independent G_k from their pmfs, via P(max <= t) = Π_k P(G_k <= t)."""
    support = sorted(set().union(*pmfs))
    cdfs = [np.cumsum([pmf.get(t, 0.0) for t in support]) for pmf in pmfs]
    below = np.prod(cdfs, axis=0)
    return float(np.dot(support, np.diff(below, prepend=0.0)))


def test_noise_floors_match_exact_binomial_expectations():
    """Two clients, two groups, binary labels, small cells: the exact expected gaps of the fair
    classifiers (DP: independent Bernoulli(p) predictions with the pooled rate; EOP: rate q_y
    per label y) from binomial enumeration, against the simulation."""
    # counts[k][a] = [[#(Y=0,Ŷ=0), #(Y=0,Ŷ=1)], [#(Y=1,Ŷ=0), #(Y=1,Ŷ=1)]]
    counts = np.array([[[[6, 2], [1, 3]], [[3, 1], [2, 2]]],
                       [[[5, 0], [2, 4]], [[9, 3], [1, 1]]]])
    floors = noise_floors(list(counts), draws=40_000, seed=3)
    rows = counts.sum(axis=3)  # [k, a, y]
    p = counts[..., 1].sum() / counts.sum()  # pooled P(Ŷ=1) = 16 / 45
    group_rows = rows.sum(axis=2)  # [k, a]
    pooled_groups = group_rows.sum(axis=0)
    local = [_abs_gap_pmf(*group_rows[k], p) for k in range(2)]
    expected = {"dp_global": _mean(_abs_gap_pmf(*pooled_groups, p)),
                "dp_local_max": _mean_of_max(local),
                "dp_local_mean": np.mean([_mean(pmf) for pmf in local])}
    # EOP (max over both classes of the TPR gap): class y's TPR moves with rate q_y on the
    # Y=y rows; for the global gap the two classes' gaps are independent, so E[max] is exact.
    pooled = counts.sum(axis=(0, 1))
    hit_rate = np.diag(pooled) / pooled.sum(axis=1)  # q_y = P(Ŷ=y | Y=y)
    by_class = [_abs_gap_pmf(*rows.sum(axis=0)[:, y], hit_rate[y]) for y in range(2)]
    expected["eop_global"] = _mean_of_max(by_class)
    for key, value in expected.items():
        assert floors[f"{key}_floor"] == pytest.approx(value, abs=0.004), key
    assert expected["dp_local_max"] > expected["dp_global"] + 0.1  # small cells, large floor


def test_noise_floors_are_deterministic_and_follow_the_prediction_rates():
    rng = np.random.default_rng(0)
    counts = [rng.integers(0, 40, (2, 2, 2)) for _ in range(4)]
    assert noise_floors(counts) == noise_floors(counts)
    assert set(noise_floors(counts)) == {f"{key}_{where}_floor" for key in GAP_KEYS
                                         for where in ("global", "local_max", "local_mean")}
    # A classifier predicting one class for everyone: every fair draw does too, no noise.
    constant = [np.stack([c.sum(axis=2), np.zeros((2, 2), int)], axis=2) for c in counts]
    assert all(value == 0.0 for value in noise_floors(constant).values())
    # An empty client is left out of the local max and mean, as in the reported gaps.
    with_empty = [*counts, np.zeros((2, 2, 2), int)]
    assert noise_floors(with_empty) == noise_floors(counts)


def test_expected_confusion_counts_of_one_hot_probabilities_are_the_counts():
    rng = np.random.default_rng(1)
    y, s, y_pred = rng.integers(0, 3, 200), rng.integers(0, 2, 200), rng.integers(0, 3, 200)
    np.testing.assert_array_equal(
        expected_confusion_counts(y, np.eye(3)[y_pred], s, 3, 2),
        confusion_counts(y, y_pred, s, 3, 2))
    soft = rng.dirichlet(np.ones(3), 200)
    expected = expected_confusion_counts(y, soft, s, 3, 2)
    assert expected.sum() == pytest.approx(200)
    assert expected[1, 2].sum() == pytest.approx(soft[(s == 1) & (y == 2)].sum())
