"""Attribute-inference attack on user embeddings: how much a private user attribute leaks.

Threat model (gray-box, as in RAID and the PoT-AU line of work): the attacker holds the trained
user embeddings and knows the attribute of a subset of users (its shadow set). It trains a
classifier on (embedding, attribute) for those users and predicts the attribute of the rest.
Here the shadow set is a stratified 80 % of the users and the attack is scored on the other
20 %, repeated over several split/initialisation seeds and averaged.

Two probes: an MLP (hidden layers 100 and 50, ReLU, Adam lr 1e-3, at most 200 epochs; the
brief's attacker) and a logistic regression (a linear probe: what a weaker attacker gets).
Both see standardised features (the scaler is fitted on the shadow set only).

With ``oriented``, a binary attacker also checks its direction on its own shadow set: when the
out-of-fold AUC of a 3-fold cross-validation there is below 0.5 it swaps the two classes. This
matters when the embeddings anti-correlate with the attribute from one user to the next (as
collapsed RAID embeddings do, experiments/README.md): the plain attacker then scores below 0.5
and the oriented one reads the leak the other way round.

Scores: AUC (binary: the positive class's probability; K > 2 classes: the mean of the K
one-vs-rest AUCs), macro-F1 and balanced accuracy. A perfect defence gives AUC 0.5 and
balanced accuracy 1/K. The three scores are computed here in numpy, cross-checked against
scikit-learn in tests/test_attribute_inference.py.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.stats import rankdata
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict, train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

__all__ = ["PROBES", "SCORES", "attack", "balanced_accuracy", "macro_auc", "macro_f1"]

PROBES = ("mlp", "logreg")
SCORES = ("auc", "f1", "bacc")


def macro_auc(labels: np.ndarray, proba: np.ndarray) -> float:
    """ROC AUC from class probabilities [n, K]: binary = AUC of class 1, else mean one-vs-rest.

    Each AUC is the Mann-Whitney statistic: the share of (positive, negative) pairs that the
    score orders correctly, ties counting one half (average ranks).
    """
    labels, proba = np.asarray(labels), np.asarray(proba, dtype=np.float64)
    classes = range(proba.shape[1])
    aucs = [_binary_auc(labels == k, proba[:, k]) for k in (classes if len(classes) > 2 else [1])]
    return float(np.mean(aucs))


def _binary_auc(positive: np.ndarray, score: np.ndarray) -> float:
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"AUC needs both classes among the labels; got {n_pos} positive and "
                         f"{n_neg} negative rows")
    ranks = rankdata(score)  # average ranks on ties
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def macro_f1(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> float:
    """Unweighted mean over classes of F1 = 2 TP / (2 TP + FP + FN); a class with no true and
    no predicted row scores 0 (scikit-learn's zero_division=0)."""
    scores = []
    for k in range(num_classes):
        tp = np.sum((labels == k) & (predicted == k))
        wrong = np.sum((labels == k) != (predicted == k))  # FP + FN
        scores.append(2 * tp / (2 * tp + wrong) if tp + wrong else 0.0)
    return float(np.mean(scores))


def balanced_accuracy(labels: np.ndarray, predicted: np.ndarray) -> float:
    """Mean over the classes present in ``labels`` of the recall of that class."""
    return float(np.mean([np.mean(predicted[labels == k] == k) for k in np.unique(labels)]))


def _probe(name: str, seed: int):
    if name == "mlp":
        model = MLPClassifier(hidden_layer_sizes=(100, 50), learning_rate_init=1e-3,
                              max_iter=200, random_state=seed)
    elif name == "logreg":
        model = LogisticRegression(max_iter=1000)
    else:
        raise ValueError(f"probe = {name!r}: expected one of {', '.join(PROBES)}")
    return make_pipeline(StandardScaler(), model)


def _shadow_auc(name: str, seed: int, x: np.ndarray, y: np.ndarray) -> float:
    """Out-of-fold AUC of the probe on the shadow set (3 stratified folds)."""
    folds = StratifiedKFold(3, shuffle=True, random_state=seed)
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore", ConvergenceWarning)
        proba = cross_val_predict(_probe(name, seed), x, y, cv=folds, method="predict_proba")
    return macro_auc(y, proba)


def attack(embeddings: np.ndarray, labels: np.ndarray, seeds: int = 3,
           probes: tuple[str, ...] = PROBES, test_fraction: float = 0.2,
           oriented: bool = False) -> dict[str, float]:
    """Attack scores averaged over ``seeds`` splits: ``{probe}_{score}`` for every probe.

    ``embeddings`` [n_users, d], ``labels`` [n_users] integer classes 0..K-1 (K >= 2). Split
    ``s`` is a stratified ``test_fraction`` hold-out drawn with seed ``s``, which also seeds
    the MLP's initialisation, so the result is a function of the inputs. ``oriented`` (binary
    attributes only) lets the attacker swap the classes by its own cross-validation.
    """
    embeddings = np.asarray(embeddings, dtype=np.float64)
    labels = np.asarray(labels)
    if embeddings.ndim != 2 or len(embeddings) != len(labels):
        raise ValueError(f"embeddings {embeddings.shape} and labels {labels.shape}: expected "
                         "[n_users, d] and [n_users]")
    num_classes = int(labels.max()) + 1
    if len(np.unique(labels)) < 2:
        raise ValueError("the attribute has a single value among these users: nothing to infer")
    if oriented and num_classes != 2:
        raise ValueError(f"oriented attacks need a binary attribute; got {num_classes} classes")
    totals = {f"{p}_{s}": 0.0 for p in probes for s in SCORES}
    for seed in range(seeds):
        x_train, x_test, y_train, y_test = train_test_split(
            embeddings, labels, test_size=test_fraction, stratify=labels, random_state=seed)
        for name in probes:
            model = _probe(name, seed)
            # One BLAS/OpenMP thread: on these small matrices more threads only contend (with
            # torch's OpenMP runtime loaded, the default made one MLP fit ~20x slower here).
            with warnings.catch_warnings(), threadpool_limits(1):
                warnings.simplefilter("ignore", ConvergenceWarning)  # 200 epochs is the budget
                model.fit(x_train, y_train)
            proba = np.zeros((len(x_test), num_classes))
            proba[:, model.classes_] = model.predict_proba(x_test)
            if oriented and _shadow_auc(name, seed, x_train, y_train) < 0.5:
                proba = proba[:, ::-1]
            predicted = model.classes_[np.argmax(proba[:, model.classes_], axis=1)]
            totals[f"{name}_auc"] += macro_auc(y_test, proba)
            totals[f"{name}_f1"] += macro_f1(y_test, predicted, num_classes)
            totals[f"{name}_bacc"] += balanced_accuracy(y_test, predicted)
    return {name: total / seeds for name, total in totals.items()}
