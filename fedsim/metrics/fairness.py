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

Noise floors (:func:`noise_floors`): what each reported gap would read, on average, for a
classifier that is exactly fair in the population, evaluated on the same test rows. A small
group's measured rates carry binomial noise, so a measured gap near its floor is not evidence of
unfairness, and no method can be expected to measure much below it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["GAP_KEYS", "confusion_counts", "expected_confusion_counts", "fairness_gaps",
           "global_and_local", "group_rates", "noise_floors"]

GAP_KEYS = ("dp", "dp_pop", "eop", "eop_pop", "eo", "eo_pop")


def _check_codes(arrays: dict[str, np.ndarray], limits: dict[str, int]) -> dict[str, np.ndarray]:
    """The arrays as numpy, checked to be 1-D integer codes of equal length within their limits."""
    arrays = {name: np.asarray(values) for name, values in arrays.items()}
    shapes = {values.shape for values in arrays.values()}
    if len(shapes) != 1 or next(iter(arrays.values())).ndim != 1:
        raise ValueError(f"{', '.join(arrays)} must be 1-D of equal length; got {shapes}")
    for name, upper in limits.items():
        values = arrays[name]
        if not np.issubdtype(values.dtype, np.integer):
            raise ValueError(f"{name} must hold integer codes, got dtype {values.dtype}")
        if values.size and (values.min() < 0 or values.max() >= upper):
            raise ValueError(
                f"{name} has values in [{values.min()}, {values.max()}]; allowed is [0, {upper})"
            )
    return arrays


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
    arrays = _check_codes({"y_true": y_true, "y_pred": y_pred, "sensitive": sensitive},
                          {"y_true": num_classes, "y_pred": num_classes, "sensitive": num_groups})
    flat = (arrays["sensitive"] * num_classes + arrays["y_true"]) * num_classes + arrays["y_pred"]
    size = num_groups * num_classes * num_classes
    counts = np.bincount(flat.astype(np.int64), minlength=size)
    return counts.reshape(num_groups, num_classes, num_classes).astype(np.int64)


def expected_confusion_counts(
    y_true: np.ndarray,
    probabilities: np.ndarray,
    sensitive: np.ndarray,
    num_classes: int,
    num_groups: int,
) -> np.ndarray:
    """float64 [num_groups, num_classes, num_classes]: counts[a, i, j] = Σ P(Ŷ=j | row) over the
    rows with A=a, Y=i.

    The confusion counts a randomised classifier (prediction probabilities [rows, classes]) is
    expected to produce on these rows: the mean over infinitely many draws of its labels. A
    one-hot `probabilities` gives :func:`confusion_counts` exactly.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.shape != (len(y_true), num_classes):
        raise ValueError(f"probabilities must be [rows, num_classes] = {(len(y_true), num_classes)}, "
                         f"got {probabilities.shape}")
    arrays = _check_codes({"y_true": y_true, "sensitive": sensitive},
                          {"y_true": num_classes, "sensitive": num_groups})
    counts = np.zeros((num_groups * num_classes, num_classes))
    np.add.at(counts, arrays["sensitive"] * num_classes + arrays["y_true"], probabilities)
    return counts.reshape(num_groups, num_classes, num_classes)


def _rate(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, NaN where the denominator is 0 (no support, no rate)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / denominator, np.nan)


def _max_defined(values: np.ndarray, axis: int | tuple[int, ...]) -> np.ndarray:
    """Largest non-NaN value along `axis`, 0.0 where there is none."""
    largest = np.where(np.isnan(values), -np.inf, values).max(axis=axis)
    return np.where(np.isneginf(largest), 0.0, largest)


def _pairwise_gap(rates: np.ndarray) -> np.ndarray:
    """Max over classes (last axis) of the spread between groups (axis -2), ignoring NaN groups."""
    spread = np.fmax.reduce(rates, axis=-2) - np.fmin.reduce(rates, axis=-2)
    return _max_defined(spread, axis=-1)


def _population_gap(rates: np.ndarray, population: np.ndarray) -> np.ndarray:
    """Max over (group, class) of |group rate - population rate|, ignoring NaN entries."""
    return _max_defined(np.abs(rates - population[..., None, :]), axis=(-2, -1))


def group_rates(counts: np.ndarray, criterion: str) -> np.ndarray:
    """[groups, classes] rates behind a criterion's gaps, NaN where a group has no rows.

    "dp": selection rates P(Ŷ=y | A=a); "eop": true-positive rates TPR_y(a) = P(Ŷ=y | Y=y, A=a).
    Leading axes of `counts` (a batch of count tensors) are kept.
    """
    counts = np.asarray(counts)
    if criterion == "dp":
        return _rate(counts.sum(axis=-2), counts.sum(axis=(-2, -1))[..., None])
    if criterion == "eop":
        return _rate(np.diagonal(counts, axis1=-2, axis2=-1), counts.sum(axis=-1))
    raise ValueError(f"criterion = {criterion!r}: expected 'dp' or 'eop'")


def _gaps(counts: np.ndarray) -> dict[str, np.ndarray]:
    """The gaps and accuracy of :func:`fairness_gaps` for counts [..., groups, classes, classes],
    one value per leading index (vectorised, for :func:`noise_floors`)."""
    total = counts.sum(axis=(-3, -2, -1))
    group_size = counts.sum(axis=(-2, -1))  # [..., G]
    predicted = counts.sum(axis=-2)  # [..., G, C]: #(A=a, Ŷ=y)
    true_class = counts.sum(axis=-1)  # [..., G, C]: #(A=a, Y=y)
    hits = np.diagonal(counts, axis1=-2, axis2=-1)  # [..., G, C]: #(A=a, Y=y, Ŷ=y)
    false_alarms = predicted - hits  # #(A=a, Y≠y, Ŷ=y)
    negatives = group_size[..., None] - true_class  # #(A=a, Y≠y)

    selection = group_rates(counts, "dp")
    tpr = group_rates(counts, "eop")
    fpr = _rate(false_alarms, negatives)
    pop_selection = predicted.sum(-2) / total[..., None]
    pop_tpr = _rate(hits.sum(-2), true_class.sum(-2))
    pop_fpr = _rate(false_alarms.sum(-2), negatives.sum(-2))

    eop, eop_pop = _pairwise_gap(tpr), _population_gap(tpr, pop_tpr)
    return {
        "dp": _pairwise_gap(selection),
        "dp_pop": _population_gap(selection, pop_selection),
        "eop": eop,
        "eop_pop": eop_pop,
        "eo": np.maximum(eop, _pairwise_gap(fpr)),
        "eo_pop": np.maximum(eop_pop, _population_gap(fpr, pop_fpr)),
        "accuracy": hits.sum(axis=(-2, -1)) / total,
    }


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
    Counts may be fractional: the expected counts of a randomised classifier
    (:func:`expected_confusion_counts`) give its expected rates.
    """
    counts = np.asarray(counts)
    if counts.ndim != 3 or counts.shape[1] != counts.shape[2]:
        raise ValueError(f"counts must be [groups, classes, classes], got shape {counts.shape}")
    if counts.sum() == 0:
        raise ValueError("counts are all zero; metrics need at least one row")
    return {key: float(value) for key, value in _gaps(counts).items()}


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


NOISE_DRAWS = 1000  # simulated test sets per noise floor


def noise_floors(counts_per_client: list[np.ndarray], *, draws: int = NOISE_DRAWS,
                 seed: int = 0) -> dict[str, float]:
    """Expected value of every gap of :func:`global_and_local` for an exactly fair classifier.

    The fair classifier keeps the evaluated one's pooled prediction rates and is fair in the
    population for the criterion at hand, so on the test rows its predictions are independent
    draws:
    - DP family ("dp", "dp_pop"): every row gets class j with the pooled rate P̂(Ŷ=j),
      independently of its group and label (DP-fair whatever the base rates);
    - EOP/EO family ("eop", "eop_pop", "eo", "eo_pop"): a row of label i gets class j with the
      pooled rate P̂(Ŷ=j | Y=i), independently of its group (fair for EOP and EO).
    The rows per (client, group, label) cell are those of `counts_per_client` (the test split's),
    so a cell's simulated confusion row is a multinomial draw. Each of `draws` simulated test
    sets (generator seeded with `seed`, so the floor is a function of the counts) is scored
    exactly like the reported gaps: global on the pooled draw, local max and mean over the
    clients that have rows. Keys: "<gap>_global_floor", "<gap>_local_max_floor" and
    "<gap>_local_mean_floor" for every gap in GAP_KEYS. This is the floor of a deterministic
    population-fair classifier (or of a randomised one whose labels are drawn); expected counts
    of a randomised one (:func:`expected_confusion_counts`) vary less.
    """
    counts = np.asarray(counts_per_client, dtype=np.float64)
    if counts.ndim != 4 or counts.shape[2] != counts.shape[3]:
        raise ValueError(f"counts_per_client must be [clients, groups, classes, classes], got "
                         f"shape {counts.shape}")
    counts = counts[counts.sum(axis=(1, 2, 3)) > 0]  # clients without rows have no local gaps
    if counts.size == 0:
        raise ValueError("counts are all zero; noise floors need at least one row")
    if draws < 1:
        raise ValueError(f"draws={draws} is invalid; it must be >= 1")
    cells = np.rint(counts.sum(axis=-1)).astype(np.int64)  # [K, G, C] rows per cell
    pooled = counts.sum(axis=(0, 1))  # [C true, C predicted]
    marginal = pooled.sum(axis=0) / pooled.sum()
    per_label = pooled.sum(axis=1, keepdims=True)
    conditional = np.where(per_label > 0, pooled / np.where(per_label > 0, per_label, 1.0),
                           marginal)
    nulls = {("dp", "dp_pop"): np.broadcast_to(marginal, pooled.shape),
             ("eop", "eop_pop", "eo", "eo_pop"): conditional}
    rng = np.random.default_rng(seed)
    chunk = max(1, min(draws, 2_000_000 // max(1, cells.size * cells.shape[-1])))
    floors: dict[str, float] = {}
    for keys, rates in nulls.items():
        rates = rates / rates.sum(axis=1, keepdims=True)
        sums = {f"{key}_{where}": 0.0 for key in keys for where in ("global", "local_max",
                                                                     "local_mean")}
        for start in range(0, draws, chunk):
            size = min(chunk, draws - start)
            simulated = rng.multinomial(cells, rates, size=(size, *cells.shape))  # [D,K,G,C,C]
            pooled_gaps, local_gaps = _gaps(simulated.sum(axis=1)), _gaps(simulated)
            for key in keys:
                sums[f"{key}_global"] += pooled_gaps[key].sum()
                sums[f"{key}_local_max"] += local_gaps[key].max(axis=1).sum()
                sums[f"{key}_local_mean"] += local_gaps[key].mean(axis=1).sum()
        floors.update({f"{name}_floor": float(total / draws) for name, total in sums.items()})
    return {f"{key}_{where}_floor": floors[f"{key}_{where}_floor"] for key in GAP_KEYS
            for where in ("global", "local_max", "local_mean")}
