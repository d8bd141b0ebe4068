"""Properties of the partitioners: every row once, determinism, and each split's intended skew."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.stats import spearmanr

from fedsim.partition import (
    PARTITIONERS,
    dirichlet,
    dirichlet_capped,
    hetero,
    iid,
    make_partition,
    natural_id,
    single,
)

seeds = st.integers(0, 2**32 - 1)


def assert_partition(parts: list[np.ndarray], num_rows: int) -> None:
    """Each client's indices are sorted int64 and together they cover every row exactly once."""
    for part in parts:
        assert part.dtype == np.int64
        assert np.all(np.diff(part) > 0)
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(num_rows))


def assert_same(first: list[np.ndarray], second: list[np.ndarray]) -> None:
    assert len(first) == len(second)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def shares(parts: list[np.ndarray], column: np.ndarray) -> np.ndarray:
    """[values, clients]: the fraction of each value's rows held by each client."""
    values = np.unique(column)
    held = np.array([[np.sum(column[part] == v) for part in parts] for v in values])
    return held / held.sum(axis=1, keepdims=True)


def test_single():
    assert_partition(single(7), 7)
    assert len(single(7)) == 1


@given(data=st.data(), num_rows=st.integers(1, 300), seed=seeds)
def test_iid(data, num_rows, seed):
    num_clients = data.draw(st.integers(1, num_rows))
    parts = iid(num_rows, num_clients, seed=seed)
    assert_partition(parts, num_rows)
    sizes = [len(part) for part in parts]
    assert len(sizes) == num_clients and max(sizes) - min(sizes) <= 1
    assert_same(parts, iid(num_rows, num_clients, seed=seed))


@given(
    ids=st.lists(st.integers(-5, 30), min_size=1, max_size=200),
    ids_per_client=st.integers(1, 6),
    seed=seeds,
)
def test_natural_id(ids, ids_per_client, seed):
    ids = np.array(ids)
    parts = natural_id(ids, ids_per_client=ids_per_client, seed=seed)
    assert_partition(parts, ids.size)
    distinct = np.unique(ids)
    assert len(parts) == -(-distinct.size // ids_per_client)
    ids_of_client = [set(ids[part].tolist()) for part in parts]
    for client, owned in enumerate(ids_of_client):  # an id never straddles two clients
        others = set().union(*(ids_of_client[:client] + ids_of_client[client + 1 :]))
        assert not owned & others
        assert len(owned) == ids_per_client or client == len(parts) - 1
    assert_same(parts, natural_id(ids, ids_per_client=ids_per_client, seed=seed))
    if ids_per_client == 1:  # client i is the i-th smallest id, whatever the seed
        assert [owned.pop() for owned in ids_of_client] == distinct.tolist()
        assert_same(parts, natural_id(ids, seed=seed + 1))


@given(
    data=st.data(),
    num_rows=st.integers(1, 300),
    num_values=st.integers(1, 4),
    alpha=st.sampled_from([0.05, 0.5, 5.0]),
    min_size=st.integers(0, 3),
    seed=seeds,
)
@settings(deadline=None)
def test_dirichlet(data, num_rows, num_values, alpha, min_size, seed):
    num_clients = data.draw(st.integers(1, min(num_rows, 8)))
    assume(min_size * num_clients <= num_rows)
    column = np.random.default_rng(seed).integers(0, num_values, num_rows)
    settings_ = {"alpha": alpha, "seed": seed, "min_size": min_size, "max_tries": 50}
    try:
        parts = dirichlet(column, num_clients, **settings_)
    except ValueError as error:
        assert "min_size" in str(error)
        return
    assert_partition(parts, num_rows)
    assert len(parts) == num_clients
    assert min(len(part) for part in parts) >= min_size
    assert_same(parts, dirichlet(column, num_clients, **settings_))


@given(seed=seeds, alpha=st.sampled_from([0.1, 0.5, 2.0]), num_clients=st.integers(2, 6))
@settings(deadline=None, max_examples=30)
def test_dirichlet_same_proportions_on_train_and_test(seed, alpha, num_clients):
    """Same seed, different arrays with the same values: per-value client shares agree.

    min_size=0 makes both calls succeed on the first try, the condition for mirroring.
    """
    rng = np.random.default_rng(seed)
    train = rng.integers(0, 3, 3000)
    test = rng.permutation(np.concatenate([np.arange(3), rng.integers(0, 3, 1200)]))
    train_shares = shares(dirichlet(train, num_clients, alpha=alpha, seed=seed, min_size=0), train)
    test_shares = shares(dirichlet(test, num_clients, alpha=alpha, seed=seed, min_size=0), test)
    # floor + largest remainder puts each count within one row of its exact share
    tolerance = (1 / np.bincount(train) + 1 / np.bincount(test))[:, None]
    assert np.all(np.abs(train_shares - test_shares) <= tolerance)


def test_dirichlet_smaller_alpha_gives_more_skew():
    column = np.repeat(np.arange(4), 500)

    def mean_largest_share(alpha: float) -> float:
        partitions = [dirichlet(column, 5, alpha=alpha, seed=seed) for seed in range(20)]
        return np.mean([shares(parts, column).max(axis=1).mean() for parts in partitions])

    assert mean_largest_share(0.1) > mean_largest_share(100.0) + 0.3


def test_dirichlet_unmeetable_min_size():
    with pytest.raises(ValueError, match="min_size=2 cannot be met"):
        dirichlet(np.zeros(10), 5, alpha=1e-3, seed=0, min_size=2, max_tries=5)


@given(
    data=st.data(),
    num_rows=st.integers(40, 400),
    num_groups=st.integers(1, 3),
    num_labels=st.integers(1, 3),
    seed=seeds,
)
@settings(deadline=None)
def test_hetero_partition(data, num_rows, num_groups, num_labels, seed):
    num_clients = data.draw(st.integers(1, 5))
    rng = np.random.default_rng(seed)
    sensitive, labels = rng.integers(0, num_groups, num_rows), rng.integers(0, num_labels, num_rows)
    try:
        parts = hetero(sensitive, labels, num_clients, seed=seed)
    except ValueError as error:  # only tiny cells can leave a client empty
        assert "got no rows" in str(error)
        return
    assert_partition(parts, num_rows)
    assert len(parts) == num_clients
    assert_same(parts, hetero(sensitive, labels, num_clients, seed=seed))


def test_hetero_agreement_follows_gamma():
    seed, num_clients = 3, 10
    rng = np.random.default_rng(100)
    sensitive, labels = rng.integers(0, 2, 20_000), rng.integers(0, 2, 20_000)
    parts = hetero(sensitive, labels, num_clients, seed=seed)
    gamma = np.random.default_rng(seed).uniform(0.2, 0.8, num_clients)  # documented: drawn first
    agreement = [np.mean(sensitive[part] == labels[part]) for part in parts]
    assert spearmanr(gamma, agreement).statistic > 0.8


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: single(0), "num_rows=0"),
        (lambda: iid(10, 0, seed=0), "num_clients=0"),
        (lambda: iid(3, 4, seed=0), "num_clients=4"),
        (lambda: natural_id(np.array([1, 2]), ids_per_client=0), "ids_per_client=0"),
        (lambda: natural_id(np.array([])), "ids must be a non-empty"),
        (lambda: dirichlet(np.zeros(10), 2, alpha=0.0, seed=0), "alpha=0.0"),
        (lambda: dirichlet(np.zeros(10), 2, alpha=-1, seed=0), "alpha=-1"),
        (lambda: dirichlet(np.zeros(10), 11, alpha=1, seed=0), "num_clients=11"),
        (lambda: dirichlet(np.zeros(10), 2, alpha=1, seed=0, min_size=-1), "min_size=-1"),
        (lambda: dirichlet(np.zeros(10), 2, alpha=1, seed=0, min_size=6), "min_size=6"),
        (lambda: dirichlet(np.zeros(10), 2, alpha=1, seed=0, max_tries=0), "max_tries=0"),
        (lambda: hetero(np.zeros(10), np.zeros(9), 2, seed=0), "labels has shape"),
        (lambda: hetero(np.zeros(10), np.zeros(10), 2, seed=0, low=0.9), "low=0.9"),
        (lambda: hetero(np.zeros(10), np.zeros(10), 2, seed=0, high=1.5), "high=1.5"),
        (lambda: hetero(np.zeros(10), np.zeros(10), 0, seed=0), "num_clients=0"),
    ],
)
def test_errors_name_the_parameter(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_make_partition_dispatches():
    rng = np.random.default_rng(0)
    n = 500
    ids, column, labels = rng.integers(0, 30, n), rng.integers(0, 2, n), rng.integers(0, 2, n)
    assert_same(make_partition("single", num_rows=n, num_clients=1, seed=0), single(n))
    assert_same(make_partition("iid", num_rows=n, num_clients=4, seed=7), iid(n, 4, seed=7))
    assert_same(
        make_partition("natural", num_rows=n, num_clients=999, seed=7, ids=ids, ids_per_client=3),
        natural_id(ids, ids_per_client=3, seed=7),
    )
    assert_same(
        make_partition(
            "dirichlet", num_rows=n, num_clients=4, seed=7, column=column, alpha=0.3, min_size=5
        ),
        dirichlet(column, 4, alpha=0.3, seed=7, min_size=5),
    )
    assert_same(
        make_partition(
            "hetero", num_rows=n, num_clients=4, seed=7, column=column, labels=labels, high=0.9
        ),
        hetero(column, labels, 4, seed=7, high=0.9),
    )
    assert_same(
        make_partition("dirichlet_capped", num_rows=n, num_clients=4, seed=7, column=column,
                       alpha=0.3, min_per_value=5),
        dirichlet_capped(column, 4, alpha=0.3, seed=7, min_per_value=5),
    )
    assert set(PARTITIONERS) == {"single", "iid", "natural", "dirichlet", "dirichlet_capped",
                                 "hetero", "flwr:iid", "flwr:natural", "flwr:dirichlet"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "powerlaw"},
         r"unknown; known: \['dirichlet', 'dirichlet_capped', 'flwr:dirichlet', 'flwr:iid', "),
        ({"name": "dirichlet_capped"}, r"'dirichlet_capped' needs column="),
        ({"name": "single", "num_clients": 2}, "num_clients=2 is invalid for 'single'"),
        ({"name": "natural"}, r"'natural' needs ids="),
        ({"name": "dirichlet"}, r"'dirichlet' needs column= \(the label or sensitive attribute"),
        ({"name": "hetero", "column": np.zeros(10)}, r"'hetero' needs labels="),
        ({"name": "dirichlet", "column": np.zeros(9)}, r"column has shape \(9,\)"),
    ],
)
def test_make_partition_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_partition(**{"num_rows": 10, "num_clients": 2, "seed": 0, **kwargs})


# --- dirichlet_capped: LoGoFair's sampler ----------------------------------------------------


def authors_sampler(targets, num_users, alpha, least_samples, random):
    """liizhang/LoGofair fedlearn/utils/sampling.py ``dirichlet``, copied statement for statement,
    with ``np.random`` replaced by `random` (a seeded generator) and ``min_size_set`` sized for
    any number of values (the original's ``[0, 0]`` allows two). Returns the index lists."""
    label_num = len(np.unique(targets))
    min_size_set = [0] * label_num
    min_size = 0
    targets_numpy = np.array(targets, dtype=np.int32)
    data_idx_for_each_label = [np.where(targets_numpy == i)[0] for i in range(label_num)]
    while min_size < least_samples:
        data_indices = [[] for _ in range(num_users)]
        for k in range(label_num):
            random.shuffle(data_idx_for_each_label[k])
            distrib = random.dirichlet(np.repeat(alpha * 2, num_users))
            distrib = np.array([p * (len(idx_j) < len(targets_numpy) / num_users)
                                for p, idx_j in zip(distrib, data_indices)])
            distrib = distrib / distrib.sum()
            distrib_cumsum = (np.cumsum(distrib)
                              * len(data_idx_for_each_label[k])).astype(int)[:-1]
            data_indices = [np.concatenate((idx_j, idx.tolist())).astype(np.int64)
                            for idx_j, idx in zip(data_indices,
                                                  np.split(data_idx_for_each_label[k],
                                                           distrib_cumsum))]
            min_size_set[k] = min(len(np.intersect1d(idx_j, data_idx_for_each_label[k]))
                                  for idx_j in data_indices)
        min_size = min(min_size_set)
    return data_indices


@given(seed=seeds, num_values=st.integers(2, 3), num_clients=st.integers(2, 6),
       their_alpha=st.sampled_from([0.5, 1.0, 5.0]))
@settings(deadline=None, max_examples=25)
def test_dirichlet_capped_is_the_authors_sampler(seed, num_values, num_clients, their_alpha):
    """Same generator, same draws: the authors' code (their alpha doubled inside) and ours (the
    concentration given as is) cut the same rows for the same clients, redraws included."""
    column = np.random.default_rng(seed).integers(0, num_values, 400)
    theirs = authors_sampler(column, num_clients, their_alpha, 5, np.random.default_rng(seed))
    ours = dirichlet_capped(column, num_clients, alpha=2 * their_alpha, seed=seed,
                            min_per_value=5)
    assert_same(ours, [np.sort(indices) for indices in theirs])


def test_dirichlet_capped_golden():
    """48 rows (30 of value 0, 18 of value 1), 3 clients, seed 0: the cap is 48 / 3 = 16 rows."""
    column = np.array([0] * 30 + [1] * 18)
    parts = dirichlet_capped(column, 3, alpha=1.0, seed=0, min_per_value=3)
    held = np.array([np.bincount(column[part], minlength=2) for part in parts])
    np.testing.assert_array_equal(held, [[12, 7], [7, 3], [11, 8]])
    assert held.min() >= 3  # the per-value minimum
    assert held[:, 0].max() < 16  # under the cap before value 1, else a client gets none of it
    assert_partition(parts, column.size)


@given(data=st.data(), num_rows=st.integers(60, 400), num_values=st.integers(1, 3),
       alpha=st.sampled_from([0.3, 1.0, 10.0]), seed=seeds)
@settings(deadline=None)
def test_dirichlet_capped_properties(data, num_rows, num_values, alpha, seed):
    column = np.random.default_rng(seed).integers(0, num_values, num_rows)
    assume(len(np.unique(column)) == num_values)
    num_clients = data.draw(st.integers(1, 5))
    min_per_value = data.draw(st.integers(0, np.bincount(column).min() // num_clients))
    settings_ = {"alpha": alpha, "seed": seed, "min_per_value": min_per_value, "max_tries": 50}
    try:
        parts = dirichlet_capped(column, num_clients, **settings_)
    except ValueError as error:
        assert "cannot be met" in str(error)
        return
    assert_partition(parts, num_rows)
    assert len(parts) == num_clients
    held = np.array([np.bincount(column[part], minlength=num_values) for part in parts])
    assert held.min() >= min_per_value
    # The soft cap: a client holding >= n / N rows of the earlier values gets none of the next
    # (the last client one at most: the cumulative shares may sum to 1 - 1e-16, as the authors').
    before = np.cumsum(held, axis=1) - held  # [clients, values]
    capped = before >= num_rows / num_clients
    assert np.all(held[:-1][capped[:-1]] == 0) and np.all(held[-1][capped[-1]] <= 1)
    assert_same(parts, dirichlet_capped(column, num_clients, **settings_))


def test_dirichlet_capped_keeps_the_authors_float_artefact():
    """Found by hypothesis: the shares of the open clients sum to just below 1, so the capped
    last client still gets one row of value 2 (103 rows >= 273 / 3 before it), as the authors'."""
    column = np.random.default_rng(7706).integers(0, 3, 273)
    parts = dirichlet_capped(column, 3, alpha=0.3, seed=7706, min_per_value=1)
    theirs = authors_sampler(column, 3, 0.15, 1, np.random.default_rng(7706))
    assert_same(parts, [np.sort(indices) for indices in theirs])
    held = np.array([np.bincount(column[part], minlength=3) for part in parts])
    np.testing.assert_array_equal(held, [[60, 7, 59], [10, 1, 32], [13, 90, 1]])


def test_dirichlet_capped_errors():
    with pytest.raises(ValueError, match="min_per_value=6 is invalid"):
        dirichlet_capped(np.array([0] * 20 + [1] * 10), 2, alpha=1.0, seed=0, min_per_value=6)
    with pytest.raises(ValueError, match="min_per_value=5 cannot be met"):
        dirichlet_capped(np.array([0] * 20 + [1] * 10), 2, alpha=1e-3, seed=0, min_per_value=5,
                         max_tries=5)
    with pytest.raises(ValueError, match="alpha=0 is invalid"):
        dirichlet_capped(np.zeros(10), 2, alpha=0, seed=0)


def test_federation_cuts_train_and_test_together_with_dirichlet_capped():
    """Through a spec: one partition over train and test rows, so every client holds at least
    partition.min_per_value rows of each group over its two splits (not in each split)."""
    from fedsim.federation import load_federation
    from fedsim.spec import resolve

    spec = resolve({"dataset": "synthetic-tabular", "method": "fedavg", "model": "logreg",
                    "partitioner": "dirichlet_capped", "num_clients": 6, "partition.alpha": 1.0,
                    "partition.min_per_value": 80})
    federation = load_federation(spec)
    data = federation.dataset
    both = np.concatenate([data.s_train, data.s_test])
    expected = dirichlet_capped(both, 6, alpha=1.0, seed=spec["seed"], min_per_value=80)
    n_train = len(data.s_train)
    for train, test, part in zip(federation.train_parts, federation.test_parts, expected):
        np.testing.assert_array_equal(np.concatenate([train, test + n_train]), part)
        assert np.bincount(both[part], minlength=2).min() >= 80
