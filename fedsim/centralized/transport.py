"""RAID's optimal-transport step: a barycenter of the attribute classes' user embeddings and the
point each user is pulled towards.

With user embeddings y_u, classes U_k (k = 1..K) and mu_k = uniform on {y_u : u in U_k}:

1. nu* = argmin_nu sum_k lambda_k W2^2(mu_k, nu), lambda_k = |U_k| / |U|: the free-support
   Wasserstein-2 barycenter with m uniformly weighted support points x_j
   (``ot.lp.free_support_barycenter``, exact LP plans inside, started from m random users);
2. per class, the exact plan Pi_k between mu_k and nu* (``ot.emd``, squared Euclidean cost);
3. the target of u in U_k is the barycentric projection t_u = sum_j Pi_k[u, j] x_j / sum_j
   Pi_k[u, j].

mean_u ||y_u - t_u||^2 <= sum_k lambda_k W2^2(mu_k, nu*), with equality where every row of a
plan puts its mass on one point; an exact plan has at most |U_k| + m - 1 nonzeros, so with
m <= |U_k| all but at most m - 1 users of a class are such rows. That is why RAID's penalty is
the mean squared distance to t_u (the usual Monge-map surrogate). Every class's targets have
the same mean, sum_j b_j x_j = the mean of the support: pulling users to their targets removes
the difference of the class means exactly, and the rest of the difference between the classes
as far as m points describe nu*.
"""

from __future__ import annotations

import numpy as np
import ot

# Fixed-point iterations of the barycenter's support. On ML-100K users (943, d 64, m 256) the
# objective after 20 is within 0.2 % of that after 100, at a fifth of the time.
BARYCENTER_ITERATIONS = 20


def class_barycenter(embeddings: np.ndarray, classes: np.ndarray, support: int,
                     rng: np.random.Generator) -> np.ndarray:
    """Support points [m, d] of the lambda-weighted W2 barycenter of the classes' embeddings;
    m = min(support, number of users), started from m distinct users drawn with ``rng``."""
    y = np.asarray(embeddings, dtype=np.float64)
    groups = _groups(classes)
    m = min(support, len(y))
    start = y[rng.choice(len(y), size=m, replace=False)]
    return ot.lp.free_support_barycenter(
        [y[rows] for rows in groups], [_uniform(len(rows)) for rows in groups], start,
        b=_uniform(m), weights=np.array([len(rows) for rows in groups]) / len(y),
        numItermax=BARYCENTER_ITERATIONS)


def projection_targets(embeddings: np.ndarray, classes: np.ndarray,
                       points: np.ndarray) -> np.ndarray:
    """t_u [n, d]: each user's barycentric projection under its class's exact plan to the
    uniform measure on ``points``."""
    y = np.asarray(embeddings, dtype=np.float64)
    targets = np.empty_like(y)
    b = _uniform(len(points))
    for rows in _groups(classes):
        plan = ot.emd(_uniform(len(rows)), b, ot.dist(y[rows], points))
        targets[rows] = plan @ points / plan.sum(axis=1, keepdims=True)
    return targets


def alignment_targets(embeddings: np.ndarray, classes: np.ndarray, support: int,
                      rng: np.random.Generator) -> np.ndarray:
    """One RAID refresh: the barycenter of the classes, then every user's target."""
    return projection_targets(embeddings, classes,
                              class_barycenter(embeddings, classes, support, rng))


def _groups(classes: np.ndarray) -> list[np.ndarray]:
    values = np.unique(classes)
    if len(values) < 2:
        raise ValueError(f"alignment needs at least 2 attribute classes among the users; got "
                         f"{values.tolist()}")
    return [np.flatnonzero(classes == value) for value in values]


def _uniform(n: int) -> np.ndarray:
    return np.full(n, 1.0 / n)
