"""Synthetic datasets with a known generating process, for fast tests and sanity checks."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from fedsim.data.interactions import Interactions, build_interactions
from fedsim.data.tabular import Tabular, build_tabular

ZIPF_EXPONENT = 1.0  # item popularity ~ 1 / rank**ZIPF_EXPONENT
TEMPERATURE = 0.25  # of the user-item affinity; lower makes users' choices more predictable


class SyntheticRecDraw(NamedTuple):
    """Raw draw behind make_synthetic_interactions; `scores` is the oracle (true) preference of user u for item i."""

    users: np.ndarray  # [n] raw user id per interaction
    items: np.ndarray  # [n] raw item id per interaction
    timestamps: np.ndarray  # [n]
    gender: np.ndarray  # [num_users]
    age_group: np.ndarray  # [num_users]
    scores: np.ndarray  # [num_users, num_items] true user.item / TEMPERATURE + log popularity


def draw_synthetic_interactions(
    num_users: int, num_items: int, dim: int, mean_interactions: int, num_negatives: int, seed: int
) -> SyntheticRecDraw:
    """The generator documented in make_synthetic_interactions."""
    rng = np.random.default_rng(seed)
    user_factors = rng.normal(size=(num_users, dim)) / np.sqrt(dim)
    item_factors = rng.normal(size=(num_items, dim))
    popularity = 1.0 / rng.permutation(np.arange(1, num_items + 1)) ** ZIPF_EXPONENT
    scores = user_factors @ item_factors.T / TEMPERATURE + np.log(popularity / popularity.sum())
    # Each user needs >= 5 items (the loaders' filter) and >= num_negatives items never seen.
    counts = np.clip(rng.poisson(mean_interactions, size=num_users), 5, num_items - num_negatives)
    # Gumbel top-k: the k largest of score + Gumbel noise are k draws without replacement from softmax(score).
    ranked = np.argsort(-(scores + rng.gumbel(size=scores.shape)), axis=1)
    users = np.repeat(np.arange(num_users), counts)
    items = np.concatenate([ranked[u, :count] for u, count in enumerate(counts)])
    # Attributes are noisy functions of the first two latent dimensions, so they can be inferred from behaviour.
    gender = (user_factors[:, 0] + 0.5 * rng.normal(size=num_users) / np.sqrt(dim) > 0).astype(np.int64)
    age_signal = user_factors[:, 1] + 0.5 * rng.normal(size=num_users) / np.sqrt(dim)
    age_group = np.searchsorted(np.quantile(age_signal, [0.25, 0.5, 0.75]), age_signal).astype(np.int64)
    timestamps = rng.permutation(len(users))
    return SyntheticRecDraw(users, items, timestamps, gender, age_group, scores)


def make_synthetic_interactions(
    num_users: int = 500,
    num_items: int = 400,
    dim: int = 8,
    mean_interactions: int = 20,
    seed: int = 0,
    protocol: str = "clean",
    num_negatives: int = 99,
) -> Interactions:
    """Latent-factor implicit feedback with long-tailed popularity and inferable user attributes.

    User factors ~ N(0, I/dim), item factors ~ N(0, I); item popularity is Zipf(1) over a random item order. User u
    interacts with Poisson(mean_interactions) items (clipped to [5, num_items - num_negatives]) drawn without
    replacement from softmax(user.item / TEMPERATURE + log popularity); timestamps are a random order, so the
    held-out items are random picks of each user's set. "gender" is the sign of the first user factor plus noise,
    "age_group" the quartile of the second one plus noise. num_items counts only the items drawn at least once
    (the tail of the popularity curve may never be drawn). seed fixes both the data and the negatives.
    """
    draw = draw_synthetic_interactions(num_users, num_items, dim, mean_interactions, num_negatives, seed)
    return build_interactions(
        "synthetic-rec",
        draw.users,
        draw.items,
        draw.timestamps,
        protocol=protocol,
        num_negatives=num_negatives,
        seed=seed,
        user_attributes={"gender": dict(enumerate(draw.gender)), "age_group": dict(enumerate(draw.age_group))},
    )


def make_synthetic_tabular(n: int = 4000, num_features: int = 10, seed: int = 0, test_fraction: float = 0.4) -> Tabular:
    """Binary classification with a binary group s whose base rate differs.

    s ~ Bernoulli(0.4); features x ~ N(0.5 * s, I) (a group-dependent mean shift, so a blind model can still
    partly infer s); y ~ Bernoulli(sigmoid(w.x + b_s)) with w ~ N(0, I/num_features) and per-group intercepts
    chosen so that P(y=1 | s=0) is about 0.45 and P(y=1 | s=1) about 0.2.
    """
    rng = np.random.default_rng(seed)
    s = (rng.random(n) < 0.4).astype(np.int64)
    x = rng.normal(size=(n, num_features)) + 0.5 * s[:, None]
    logits = x @ (rng.normal(size=num_features) / np.sqrt(num_features))
    # Shift each group's logits so its mean positive rate hits its target (bisection on a monotone function).
    for group, rate in ((0, 0.45), (1, 0.2)):
        low, high = -10.0, 10.0
        for _ in range(50):
            mid = (low + high) / 2
            low, high = (mid, high) if np.mean(1 / (1 + np.exp(-(logits[s == group] + mid)))) < rate else (low, mid)
        logits[s == group] += (low + high) / 2
    y = (rng.random(n) < 1 / (1 + np.exp(-logits))).astype(np.int64)
    names = [f"x{j}" for j in range(num_features)]
    return build_tabular(
        "synthetic-tabular",
        {name: x[:, j] for j, name in enumerate(names)},
        [],
        names,
        label=(y, ("0", "1")),
        sensitive=(s, ("0", "1")),
        seed=seed,
        test_fraction=test_fraction,
    )
