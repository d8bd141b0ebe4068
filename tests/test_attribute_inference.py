"""The attribute-inference attacker: its scores against scikit-learn's, and what it detects."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score

from fedsim.metrics.attribute_inference import attack, balanced_accuracy, macro_auc, macro_f1


@pytest.mark.parametrize("num_classes", [2, 3])
def test_scores_match_sklearn(num_classes):
    rng = np.random.default_rng(num_classes)
    labels = rng.integers(num_classes, size=200)
    # Rounded probabilities, so that ties occur; one class is never predicted.
    proba = np.round(rng.dirichlet(np.ones(num_classes), size=200) + 0.3 * np.eye(num_classes)
                     [labels], 1)
    proba /= proba.sum(1, keepdims=True)
    predicted = np.where(labels == num_classes - 1, 0, labels)
    predicted[rng.random(200) < 0.3] = 0
    expected_auc = (roc_auc_score(labels, proba[:, 1]) if num_classes == 2 else
                    roc_auc_score(labels, proba, multi_class="ovr", average="macro"))
    assert macro_auc(labels, proba) == pytest.approx(expected_auc, abs=1e-12)
    assert macro_f1(labels, predicted, num_classes) == pytest.approx(
        f1_score(labels, predicted, average="macro", zero_division=0), abs=1e-12)
    assert balanced_accuracy(labels, predicted) == pytest.approx(
        balanced_accuracy_score(labels, predicted), abs=1e-12)


@pytest.mark.slow
def test_attack_finds_a_leak_and_nothing_in_noise():
    rng = np.random.default_rng(0)
    labels = (rng.random(400) < 0.3).astype(np.int64)
    independent = rng.normal(size=(400, 8))
    leaked = independent + 2.5 * labels[:, None] * np.eye(8)[0]
    found = attack(leaked, labels, seeds=2)
    chance = attack(independent, labels, seeds=2)
    assert set(found) == {f"{p}_{s}" for p in ("mlp", "logreg") for s in ("auc", "f1", "bacc")}
    assert found["mlp_auc"] > 0.85 and found["logreg_auc"] > 0.85
    assert abs(chance["mlp_auc"] - 0.5) < 0.12 and abs(chance["logreg_auc"] - 0.5) < 0.12
    assert attack(leaked, labels, seeds=2) == found  # a function of its inputs


def test_attack_rejects_a_single_class():
    with pytest.raises(ValueError, match="single value"):
        attack(np.zeros((10, 2)), np.zeros(10, dtype=np.int64))


def test_oriented_attacker_reads_collapsed_clusters_the_other_way():
    """Users collapsed onto shared points, one of class 1 and three of class 0 at each: a held-out
    user's duplicates in the shadow set lean to the other class, so the plain attacker scores far
    below chance, and one that checks its direction on the shadow set reads the leak."""
    points = np.random.default_rng(0).normal(size=(100, 8))
    embeddings, labels = np.repeat(points, 4, axis=0), np.tile([1, 0, 0, 0], 100)
    plain = attack(embeddings, labels, seeds=1, probes=("mlp",))
    oriented = attack(embeddings, labels, seeds=1, probes=("mlp",), oriented=True)
    assert plain["mlp_auc"] < 0.2 and oriented["mlp_auc"] == pytest.approx(1 - plain["mlp_auc"])
    with pytest.raises(ValueError, match="binary"):
        attack(embeddings, labels * np.arange(400) % 3, seeds=1, oriented=True)
