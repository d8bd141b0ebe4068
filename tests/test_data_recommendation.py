"""Recommendation datasets: counts on the real files, leave-one-out and negative-sampling invariants."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from fedsim.data import DataError, Interactions, load_dataset
from fedsim.data.files import locate, read_rows
from fedsim.data.interactions import PROTOCOLS, build_interactions
from fedsim.data.recommendation import AMAZON_VIDEO_RATINGS, ML100K_RATINGS
from fedsim.data.synthetic import draw_synthetic_interactions, make_synthetic_interactions

# (users, items, distinct interactions after the >= 5 filter): the clean protocol's split
EXPECTED = {
    # The authors' 34,889 rows include the file's 3 duplicated (user, item) pairs, all of kept users (every
    # user still has >= 5 distinct items), so 34,889 - 3 = 34,886 distinct interactions remain.
    "filmtrust": (1227, 2059, 34886),
    "amazon-video": (8072, 11830, 63836),
    # 15 of the 1,892 users have fewer than 5 artists; dropping their 33 rows also drops 15 artists.
    "lastfm-2k": (1877, 17617, 92801),
    "movielens-100k": (943, 1682, 100000),
}
# Rows kept by the authors' protocol (duplicates kept): FilmTrust's 3 repeated pairs stay.
FEDRECGEL_ROWS = {"filmtrust": 34889, "amazon-video": 63836}


def check_split(data: Interactions, num_negatives: int = 99) -> None:
    """Invariants of any leave-one-out split made by build_interactions (with merged duplicates,
    also: no repeated training item, no held-out item in training)."""
    dedupe = PROTOCOLS[data.protocol].dedupe
    assert data.train_indptr[0] == 0 and data.train_indptr[-1] == data.num_train
    assert np.all(np.diff(data.train_indptr) >= 1)
    held_out = [(data.test_items, data.test_negatives)]
    if data.val_items is not None:
        held_out.append((data.val_items, data.val_negatives))
        assert np.all(data.val_items != data.test_items)
    used_items = set()
    for u in range(data.num_users):
        train = data.user_items(u)
        assert np.all(np.diff(train) > 0 if dedupe else np.diff(train) >= 0)  # ascending
        assert np.array_equal(np.sort(data.user_sequence(u)), train)  # the same items, in time order
        seen = set(train.tolist()) | {int(items[u]) for items, _ in held_out}
        if dedupe:
            assert len(seen) == len(train) + len(held_out)  # held-out items are not in train
        for _, negatives in held_out:
            assert len(set(negatives[u].tolist())) == num_negatives
            assert not seen & set(negatives[u].tolist())
        used_items |= seen
    for _, negatives in held_out:
        assert negatives.shape == (data.num_users, num_negatives) and negatives.dtype == np.int64
    assert len(used_items) == data.num_items  # num_items counts every remaining item, test-only ones included


@pytest.mark.parametrize("name", list(EXPECTED))
def test_real_counts_and_split(data_dir, name):
    data = load_dataset(name, data_dir)
    assert (data.num_users, data.num_items, data.num_train + 2 * data.num_users) == EXPECTED[name]
    check_split(data)


@pytest.mark.parametrize("name", ["filmtrust", "amazon-video"])
@pytest.mark.slow
def test_seed_determinism(data_dir, name):
    a = load_dataset(name, data_dir, seed=7, protocol="fedrecgel")
    b = load_dataset(name, data_dir, seed=7, protocol="fedrecgel")
    c = load_dataset(name, data_dir, seed=8, protocol="fedrecgel")
    assert a.val_items is None and a.val_negatives is None
    assert a.num_train == FEDRECGEL_ROWS[name] - a.num_users
    check_split(a)
    assert np.array_equal(a.test_negatives, b.test_negatives) and np.array_equal(a.train_indices, b.train_indices)
    assert not np.array_equal(a.test_negatives, c.test_negatives)
    # Test negatives come from their own stream, so they do not depend on whether a validation item is held out.
    with_val = load_dataset(name, data_dir, seed=7, protocol="clean")
    if name == "amazon-video":  # real time: the same test items; FilmTrust's random hold-out is drawn per load
        assert np.array_equal(a.test_items, with_val.test_items)
        assert np.array_equal(a.test_negatives, with_val.test_negatives)


def test_cache_returns_read_only_arrays(data_dir):
    data = load_dataset("filmtrust", data_dir)
    assert load_dataset("filmtrust", str(data_dir)) is data
    with pytest.raises(ValueError):
        data.train_indices[0] = 0


def test_movielens_attributes(data_dir):
    data = load_dataset("movielens-100k", data_dir)
    attributes = data.user_attributes
    assert np.bincount(attributes["gender"]).tolist() == [670, 273]  # u.user: 670 M, 273 F
    assert np.bincount(attributes["age_group"], minlength=4).tolist() == [234, 310, 194, 205]
    assert np.bincount(attributes["age_30"]).tolist() == [409, 534]  # age < 30, age >= 30
    assert attributes["occupation"].max() == 20  # 21 occupations


def test_amazon_test_item_is_latest(data_dir):
    """On the raw ratings.dat, each user's test item has that user's largest timestamp."""
    rows = read_rows(locate(AMAZON_VIDEO_RATINGS, data_dir), ",", 4)
    raw_users = sorted({row[0] for row in rows})
    raw_items = sorted({row[1] for row in rows})
    latest: dict[str, int] = {}
    time_of: dict[tuple[str, str], int] = {}
    for user, item, _, time in rows:
        latest[user] = max(latest.get(user, 0), int(time))
        time_of[user, item] = int(time)
    data = load_dataset("amazon-video", data_dir)
    for u, i in enumerate(data.test_items):
        assert time_of[raw_users[u], raw_items[i]] == latest[raw_users[u]]


def test_movielens_sequences_follow_time(data_dir):
    """On the raw u.data, every user's training sequence has non-decreasing timestamps, ties by
    descending item id (the lower id counts as later), and ends before the validation item."""
    rows = read_rows(locate(ML100K_RATINGS, data_dir), "\t", 4)
    raw_users = sorted({int(row[0]) for row in rows})
    raw_items = sorted({int(row[1]) for row in rows})
    time_of = {(int(user), int(item)): int(time) for user, item, _, time in rows}
    data = load_dataset("movielens-100k", data_dir)
    for u in range(data.num_users):
        keys = [(time_of[raw_users[u], raw_items[i]], -i) for i in data.user_sequence(u)]
        assert keys == sorted(keys)
        assert keys[-1] <= (time_of[raw_users[u], raw_items[data.val_items[u]]], -data.val_items[u])


def test_builder_errors():
    with pytest.raises(DataError, match="no user"):
        build_interactions("toy", [1, 1], [1, 2], [0, 1], protocol="clean")
    with pytest.raises(DataError, match="num_negatives"):
        build_interactions("toy", [1] * 5, [1, 2, 3, 4, 5], range(5), protocol="clean", num_negatives=1)


def test_head_item_mask():
    data = make_synthetic_interactions()
    counts = data.item_train_counts()
    assert counts.sum() == data.num_train
    mask = data.head_item_mask(0.2)
    assert mask.sum() == round(0.2 * data.num_items)  # rule: round(fraction * num_items)
    assert counts[mask].min() >= counts[~mask].max()
    assert data.head_item_mask(0.0).sum() == 0 and data.head_item_mask(1.0).all()


def test_synthetic_is_learnable():
    data = make_synthetic_interactions(seed=3)
    check_split(data)
    draw = draw_synthetic_interactions(500, 400, 8, 20, 99, seed=3)
    raw_item = np.unique(draw.items)  # re-indexed item j is raw item raw_item[j]; all users are kept
    candidates = np.concatenate([data.test_items[:, None], data.test_negatives], axis=1)
    oracle = draw.scores[np.arange(data.num_users)[:, None], raw_item[candidates]]
    hit_rate = np.mean((oracle[:, 1:] > oracle[:, :1]).sum(axis=1) < 10)
    random_hit_rate = np.mean(np.random.default_rng(0).random((data.num_users, 100)).argsort(axis=1)[:, 0] < 10)
    assert hit_rate > 0.5
    assert abs(random_hit_rate - 0.1) < 0.05
    # gender is inferable from behaviour: a linear attacker on the multi-hot training items beats chance.
    gender = data.user_attributes["gender"]
    assert set(np.unique(data.user_attributes["age_group"])) == {0, 1, 2, 3}
    multi_hot = np.zeros((data.num_users, data.num_items))
    for u in range(data.num_users):
        multi_hot[u, data.user_items(u)] = 1
    attacker = LogisticRegression(max_iter=1000).fit(multi_hot[:300], gender[:300])
    assert attacker.score(multi_hot[300:], gender[300:]) > 0.7
