"""Group-fairness metrics for multi-class labels and multi-valued sensitive attributes.

Plain functions of (y_true, y_pred, sensitive), kept apart from any training method, in the
style of fairlearn. Everything goes through confusion counts counts[a, i, j] = #(A=a, Y=i,
Ŷ=j): counts add up across clients, so the global (pooled) metrics of a federation are exact
functions of the per-client counts, and no client has to share rows.

Each gap comes in two forms (FedFACT §1.3-1.4 reports both kinds in the literature):
- pairwise ("dp", "eop", "eo"): the largest difference between two groups, max over classes;
- group vs population ("dp_pop", "eop_pop", "eo_pop"): the largest difference between a group
  and everyone (FedFACT's constraint form). On one client's counts the population is that
  client's data, which is FedFACT's local definition.
A group (for "eop"/"eo": a (group, class) cell, i.e. its Y=y or Y≠y rows) with no rows has no
rate and is left out of the max: a client without some group has no gap for it. If nothing is
left (e.g. a single group), the gap is 0.0.
"""

from __future__ import annotations

import numpy as np

__all__ = ["GAP_KEYS", "confusion_counts", "fairness_gaps", "global_and_local", "group_rates"]

GAP_KEYS = ("dp", "dp_pop", "eop", "eop_pop", "eo", "eo_pop")


def confusion_counts(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    sensitive: np.ndarray,
    num_classes: int,
    num_groups: int,
) -> np.ndarray:
    """int64 [num_groups, num_classes, num_classes] with counts[a, i, j] = #(A=a, Y=i, Ŷ=j).

    Labels and groups must be integer codes in [0, num_classes) and [0, num_groups); the sizes
    are explicit so that every client's tensor has the same shape even if a client lacks some
    class or group.
    """
    arrays = {"y_true": y_true, "y_pred": y_pred, "sensitive": sensitive}
    arrays = {name: np.asarray(values) for name, values in arrays.items()}
    shapes = {values.shape for values in arrays.values()}
    if len(shapes) != 1 or arrays["y_true"].ndim != 1:
        raise ValueError(f"y_true, y_pred and sensitive must be 1-D of equal length; got {shapes}")
    limits = {"y_true": num_classes, "y_pred": num_classes, "sensitive": num_groups}
    for name, upper in limits.items():
        values = arrays[name]
        if not np.issubdtype(values.dtype, np.integer):
            raise ValueError(f"{name} must hold integer codes, got dtype {values.dtype}")
        if values.size and (values.min() < 0 or values.max() >= upper):
            raise ValueError(
                f"{name} has values in [{values.min()}, {values.max()}]; allowed is [0, {upper})"
            )
    flat = (arrays["sensitive"] * num_classes + arrays["y_true"]) * num_classes + arrays["y_pred"]
    size = num_groups * num_classes * num_classes
    counts = np.bincount(flat.astype(np.int64), minlength=size)
    return counts.reshape(num_groups, num_classes, num_classes).astype(np.int64)


def _rate(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, NaN where the denominator is 0 (no support, no rate)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / denominator, np.nan)


def _max_defined(values: np.ndarray) -> float:
    """Largest non-NaN value, 0.0 when there is none."""
    values = values[~np.isnan(values)]
    return float(values.max()) if values.size else 0.0


def _pairwise_gap(rates: np.ndarray) -> float:
    """Max over classes (columns) of the spread between groups (rows), ignoring NaN groups."""
    return _max_defined(np.fmax.reduce(rates, axis=0) - np.fmin.reduce(rates, axis=0))


def _population_gap(rates: np.ndarray, population: np.ndarray) -> float:
    """Max over (group, class) of |group rate - population rate|, ignoring NaN entries."""
    return _max_defined(np.abs(rates - population[None, :]))


def group_rates(counts: np.ndarray, criterion: str) -> np.ndarray:
    """[groups, classes] rates behind a criterion's gaps, NaN where a group has no rows.

    "dp": selection rates P(Ŷ=y | A=a); "eop": true-positive rates TPR_y(a) = P(Ŷ=y | Y=y, A=a).
    """
    counts = np.asarray(counts)
    if criterion == "dp":
        return _rate(counts.sum(axis=1), counts.sum(axis=(1, 2))[:, None])
    if criterion == "eop":
        return _rate(np.diagonal(counts, axis1=1, axis2=2), counts.sum(axis=2))
    raise ValueError(f"criterion = {criterion!r}: expected 'dp' or 'eop'")


def fairness_gaps(counts: np.ndarray) -> dict[str, float]:
    """DP, EOP and EO gaps (pairwise and group-vs-population) plus accuracy from one counts tensor.

    With rates per group a and class y:
    - DP: P(Ŷ=y | A=a);
    - EOP: TPR_y(a) = P(Ŷ=y | Y=y, A=a);
    - EO: both TPR_y(a) and FPR_y(a) = P(Ŷ=y | Y≠y, A=a); the gap is the larger of the two.
    Keys: "dp", "dp_pop", "eop", "eop_pop", "eo", "eo_pop", "accuracy".
    For binary labels the classes y=0 and y=1 give the same DP gap, and TPR_0 = 1 - FPR_1, so
    "eop" (max over both classes) equals "eo" and fairlearn's equalized_odds_difference; the
    usual positive-class-only equal opportunity is the TPR_1 gap alone and can be smaller.
    """
    counts = np.asarray(counts)
    if counts.ndim != 3 or counts.shape[1] != counts.shape[2]:
        raise ValueError(f"counts must be [groups, classes, classes], got shape {counts.shape}")
    total = counts.sum()
    if total == 0:
        raise ValueError("counts are all zero; metrics need at least one row")
    group_size = counts.sum(axis=(1, 2))  # [G]
    predicted = counts.sum(axis=1)  # [G, C]: #(A=a, Ŷ=y)
    true_class = counts.sum(axis=2)  # [G, C]: #(A=a, Y=y)
    hits = np.diagonal(counts, axis1=1, axis2=2)  # [G, C]: #(A=a, Y=y, Ŷ=y)
    false_alarms = predicted - hits  # #(A=a, Y≠y, Ŷ=y)
    negatives = group_size[:, None] - true_class  # #(A=a, Y≠y)

    selection = group_rates(counts, "dp")
    tpr = group_rates(counts, "eop")
    fpr = _rate(false_alarms, negatives)
    pop_selection = predicted.sum(0) / total
    pop_tpr = _rate(hits.sum(0), true_class.sum(0))
    pop_fpr = _rate(false_alarms.sum(0), negatives.sum(0))

    eop, eop_pop = _pairwise_gap(tpr), _population_gap(tpr, pop_tpr)
    return {
        "dp": _pairwise_gap(selection),
        "dp_pop": _population_gap(selection, pop_selection),
        "eop": eop,
        "eop_pop": eop_pop,
        "eo": max(eop, _pairwise_gap(fpr)),
        "eo_pop": max(eop_pop, _population_gap(fpr, pop_fpr)),
        "accuracy": float(hits.sum() / total),
    }


def global_and_local(counts_per_client: list[np.ndarray]) -> dict[str, float]:
    """Global gaps on the pooled counts and the max / mean over clients of each client's gaps.

    Keys: "<gap>_global" and "accuracy" (pooled), "<gap>_local_max" and "<gap>_local_mean" for
    every gap in GAP_KEYS (e.g. "dp_global", "dp_local_max", "eo_pop_local_mean"). FedFACT
    reports the local max; LoGoFair the local mean.
    """
    if not counts_per_client:
        raise ValueError("counts_per_client is empty; it needs one counts tensor per client")
    shapes = {np.shape(counts) for counts in counts_per_client}
    if len(shapes) != 1:
        raise ValueError(f"all clients' counts must have the same shape, got {sorted(shapes)}")
    pooled = fairness_gaps(np.sum(counts_per_client, axis=0))
    local = [fairness_gaps(counts) for counts in counts_per_client]
    result = {f"{key}_global": pooled[key] for key in GAP_KEYS}
    result["accuracy"] = pooled["accuracy"]
    for key in GAP_KEYS:
        values = np.array([gaps[key] for gaps in local])
        result[f"{key}_local_max"] = float(values.max())
        result[f"{key}_local_mean"] = float(values.mean())
    return result
