"""Golden tests of the named data protocols (fedsim/data/interactions.py PROTOCOLS).

One hand-written frame holds every case the rules disagree on: ties at a user's latest
timestamp (in one user the lower item id comes first in the file, in the other it comes last),
a repeated (user, item) pair, a user with exactly 5 rows of which only 4 distinct items (kept
only where duplicates are kept), a user with 4 rows (kept only by pfedrec, which has no 5-row
filter) and a user with 2 rows (dropped everywhere: no split has a training item). The expected
splits below are written out by hand from each protocol's rules, not computed:

- fedrecgel (the FedRecGEL authors' notebook): rows sorted by (uid, iid), each user's
  timestamps ranked with rank(method="first", ascending=False), rank 1 = test; no dedupe, no
  validation item;
- clean: duplicates merged into their latest row first, then the same tie rule, and the
  second-latest row is the validation item;
- recbole: a stable sort on the timestamp (ties in file order), last = test, second-last =
  validation, no dedupe;
- pfedrec (the PFedRec authors' data.py): each user's timestamps ranked in file order with
  rank(method="first", ascending=False), rank 1 = test, rank 2 = validation (so among tied rows
  the one higher up the file is the later), no dedupe, users of 3 rows and more.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedsim.data import load_dataset
from fedsim.data.files import locate, read_rows
from fedsim.data.interactions import PROTOCOLS, build_interactions
from fedsim.data.recommendation import AMAZON_VIDEO_RATINGS, ML100K_RATINGS
from fedsim.spec import SCHEMA

ROWS = [  # (user, item, timestamp) in file order
    ("a", 10, 1), ("a", 30, 2), ("a", 20, 3),
    ("a", 40, 5), ("a", 50, 5),  # tie at a's latest time: the lower id comes first in the file
    ("a", 30, 4),  # (a, 30) again, later
    ("b", 10, 7), ("b", 20, 8),
    ("b", 60, 9), ("b", 30, 9),  # tie at b's latest time: the lower id comes last in the file
    ("b", 20, 1),  # (b, 20) again, earlier: b has 5 rows but 4 distinct items
    ("c", 10, 1), ("c", 20, 2), ("c", 30, 3), ("c", 40, 4),  # 4 rows: below the 5 minimum
    ("d", 70, 1), ("d", 80, 2), ("d", 90, 3), ("d", 10, 4), ("d", 20, 5), ("d", 100, 6),
    ("e", 20, 1), ("e", 110, 1),  # 2 rows: test and validation, nothing to train on
]

# Per protocol and kept user: test item, validation item (None = no validation), training
# items in time order (oldest first), all as raw ids.
EXPECTED = {
    "fedrecgel": {
        "a": (40, None, [10, 30, 20, 30, 50]),  # 40 < 50 at t=5; (a, 30) twice in training
        "b": (30, None, [20, 10, 20, 60]),  # 30 < 60 at t=9; b kept (5 rows)
        "d": (100, None, [70, 80, 90, 10, 20]),
    },
    "clean": {
        "a": (40, 50, [10, 20, 30]),  # (a, 30) merged into its t=4 row
        # b: 4 distinct items after the merge, dropped
        "d": (100, 20, [70, 80, 90, 10]),
    },
    "recbole": {
        "a": (50, 40, [10, 30, 20, 30]),  # 50 is further down the file at t=5
        "b": (30, 60, [20, 10, 20]),  # 30 is further down the file at t=9
        "d": (100, 20, [70, 80, 90, 10]),
    },
    "pfedrec": {
        "a": (40, 50, [10, 30, 20, 30]),  # 40 is higher up the file at t=5; (a, 30) twice
        "b": (60, 30, [20, 10, 20]),  # 60 is higher up the file at t=9
        "c": (40, 30, [10, 20]),  # 4 rows are enough
        "d": (100, 20, [70, 80, 90, 10]),
    },
}


def build(protocol: str):
    users, items, times = zip(*ROWS)
    return build_interactions("golden", np.array(users), np.array(items), np.array(times),
                              protocol=protocol, num_negatives=1)


@pytest.mark.parametrize("protocol", list(EXPECTED))
def test_golden_split(protocol):
    data = build(protocol)
    expected = EXPECTED[protocol]
    kept_users = sorted(expected)
    # Items are re-indexed in sorted raw order over the kept users' rows.
    raw_items = sorted({item for user, item, _ in ROWS if user in expected})
    assert (data.protocol, data.num_users, data.num_items) == (protocol, len(kept_users),
                                                               len(raw_items))
    for u, user in enumerate(kept_users):
        test, val, sequence = expected[user]
        assert raw_items[data.test_items[u]] == test, (protocol, user)
        assert (None if data.val_items is None else raw_items[data.val_items[u]]) == val
        assert [raw_items[i] for i in data.user_sequence(u)] == sequence, (protocol, user)
        assert [raw_items[i] for i in data.user_items(u)] == sorted(sequence)
        # Negatives: never an item of the user, training or held out.
        seen = {item for row_user, item, _ in ROWS if row_user == user}
        assert raw_items[data.test_negatives[u, 0]] not in seen


def test_pfedrec_draws_its_validation_and_test_negatives_once():
    """198 = 2 x 99 distinct never-rated items per user, validation the first half, test the
    second: the two lists never share an item (independent draws would, with 2 candidates)."""
    users, items, times = zip(*ROWS)
    data = build_interactions("golden", np.array(users), np.array(items), np.array(times),
                              protocol="pfedrec", num_negatives=2)
    raw_items = sorted({item for user, item, _ in ROWS if user in EXPECTED["pfedrec"]})
    for u, user in enumerate(sorted(EXPECTED["pfedrec"])):
        drawn = np.concatenate([data.val_negatives[u], data.test_negatives[u]])
        assert len(set(drawn.tolist())) == 4, user
        seen = {item for row_user, item, _ in ROWS if row_user == user}
        assert not seen & {raw_items[i] for i in drawn}
    # One draw of 4 from seed's first stream, cut in two.
    again = np.random.default_rng(np.random.SeedSequence(42).spawn(2)[0])
    pool_a = np.flatnonzero(~np.isin(np.arange(data.num_items), [
        raw_items.index(i) for i in (10, 20, 30, 40, 50)]))
    first = again.choice(pool_a, size=4, replace=False)
    assert data.val_negatives[0].tolist() == first[:2].tolist()
    assert data.test_negatives[0].tolist() == first[2:].tolist()


def test_sampled_ranks_count_score_ties_against_the_held_out_item():
    """The PFedRec authors' metrics.py (MetronAtK), rewritten in pandas as they do it, against
    fedsim's rank: negatives listed before the positive, rank(method="first") over the scores,
    HR@10 and NDCG@10 = log 2 / log(1 + rank). Scores on a coarse grid tie often, as saturated
    float32 sigmoids do."""
    from fedsim.metrics import hit_at_k, ndcg_at_k, rank_against_sampled

    rng = np.random.default_rng(0)
    positives, negatives = rng.integers(0, 40, 300) / 40, rng.integers(0, 40, (300, 99)) / 40
    frame = pd.DataFrame({
        "user": np.concatenate([np.repeat(np.arange(300), 99), np.arange(300)]),
        "positive": np.concatenate([np.zeros(300 * 99, bool), np.ones(300, bool)]),
        "score": np.concatenate([negatives.reshape(-1), positives])})
    frame["rank"] = frame.groupby("user")["score"].rank(method="first", ascending=False)
    hits = frame[frame["positive"] & (frame["rank"] <= 10)]
    ranks = rank_against_sampled(positives, negatives)
    assert hit_at_k(ranks, 10).sum() == len(hits) > 0
    assert np.isclose(ndcg_at_k(ranks, 10).sum(), (np.log(2) / np.log(1 + hits["rank"])).sum())


def test_protocol_names_match_the_spec_key():
    assert set(SCHEMA["data.protocol"].choices) == set(PROTOCOLS)
    assert SCHEMA["data.protocol"].default == "clean"
    assert not PROTOCOLS["fedrecgel"].validation and not PROTOCOLS["fedrecgel"].dedupe


def test_unknown_protocol_is_named():
    with pytest.raises(ValueError, match="unknown data protocol 'paper'.*fedrecgel"):
        build("paper")


def test_full_ranking_keeps_the_held_out_item_of_a_duplicated_pair():
    """fedrecgel keeps duplicates: if a held-out pair has another row, that row stays in
    training (the authors' leak). Full ranking then ranks the item instead of failing."""
    from fedsim.metrics.leave_one_out import exclusions

    rows = [("u", 1, 1), ("u", 2, 2), ("u", 3, 3), ("u", 4, 4), ("u", 4, 5), ("v", 5, 1),
            ("v", 6, 2), ("v", 7, 3), ("v", 8, 4), ("v", 9, 5)]
    users, items, times = zip(*rows)
    data = build_interactions("dup", np.array(users), np.array(items), np.array(times),
                              protocol="fedrecgel", num_negatives=1)
    assert data.test_items[0] == 3 and 3 in data.user_items(0)  # item 4 (id 3) on both sides
    indptr, indices = exclusions(data, np.array([0]), data.test_items, None)
    assert indices[indptr[0]:indptr[1]].tolist() == [0, 1, 2]


def authors_test_items(frame: pd.DataFrame) -> pd.Series:
    """The FedRecGEL notebook's split, written with pandas as they do: rows sorted by
    (uid, iid), per user rank(method="first", ascending=False) of the timestamp, rank 1 = test."""
    frame = frame.sort_values(["uid", "iid"], kind="stable").reset_index(drop=True)
    rank = frame.groupby("uid")["ts"].rank(method="first", ascending=False)
    return frame[rank == 1].set_index("uid")["iid"].sort_index()


@pytest.mark.parametrize("name, ratings, sep, tied_users", [
    ("movielens-100k", ML100K_RATINGS, "\t", 415),
    ("amazon-video", AMAZON_VIDEO_RATINGS, ",", 2216),
])
@pytest.mark.slow
def test_fedrecgel_protocol_matches_the_authors_pandas_split(data_dir, name, ratings, sep,
                                                             tied_users):
    """On the real files: fedsim's fedrecgel test items equal the authors' pandas rule, user by
    user; and the users whose latest timestamp is shared by several rows (where the tie rule
    matters) are as many as the protocols issue counted."""
    rows = read_rows(locate(ratings, data_dir), sep, 4)
    frame = pd.DataFrame([(r[0], r[1], int(r[3])) for r in rows], columns=["user", "item", "ts"])
    # The authors re-index users and items in sorted raw-id order, as fedsim does.
    frame["uid"] = frame["user"].rank(method="dense").astype(int) - 1
    frame["iid"] = frame["item"].rank(method="dense").astype(int) - 1
    if name == "movielens-100k":  # numeric ids sort as numbers
        frame["uid"] = frame["user"].astype(int).rank(method="dense").astype(int) - 1
        frame["iid"] = frame["item"].astype(int).rank(method="dense").astype(int) - 1
    expected = authors_test_items(frame)
    latest = frame.groupby("uid")["ts"].transform("max") == frame["ts"]
    assert (frame[latest].groupby("uid").size() > 1).sum() == tied_users
    data = load_dataset(name, data_dir, protocol="fedrecgel")
    assert data.val_items is None
    assert np.array_equal(data.test_items, expected.to_numpy())
    # The clean protocol holds out the same test items on these files (no duplicate pairs).
    clean = load_dataset(name, data_dir, protocol="clean")
    assert np.array_equal(clean.test_items, data.test_items)


def authors_pfedrec_split(rows: list[list[str]], sort_users: bool) -> pd.DataFrame:
    """The PFedRec authors' data.py on raw rows, in pandas as they write it: (train.py) the
    Amazon frame sorted by user first; (data.py) per user rank(method="first", ascending=False)
    of the timestamp in frame order, 1 = test, 2 = validation, the rest training. One row per
    raw user: "test", "val" and the sorted training items "train"."""
    frame = pd.DataFrame([(r[0], r[1], int(r[3])) for r in rows], columns=["uid", "mid", "ts"])
    if sort_users:
        frame = frame.sort_values(by="uid", ascending=True)
    rank = frame.groupby("uid")["ts"].rank(method="first", ascending=False)
    return pd.DataFrame({"test": frame[rank == 1].set_index("uid")["mid"],
                         "val": frame[rank == 2].set_index("uid")["mid"],
                         "train": frame[rank > 2].groupby("uid")["mid"].agg(sorted)}).sort_index()


@pytest.mark.parametrize("name, ratings, sep, sort_users", [
    ("movielens-100k", ML100K_RATINGS, "\t", False),
    ("amazon-video", AMAZON_VIDEO_RATINGS, ",", True),
])
def test_pfedrec_protocol_matches_the_authors_pandas_split(data_dir, name, ratings, sep,
                                                           sort_users):
    """On the real files: every user kept (the authors filter none), and fedsim's pfedrec test,
    validation and training items equal the authors' rule, user by user. Amazon-Video is the
    authors' own file; their ML-100K ratings.dat holds u.data's rows in another order, so on
    ML-100K this is their rule on u.data (ties can fall differently on their file)."""
    rows = read_rows(locate(ratings, data_dir), sep, 4)
    expected = authors_pfedrec_split(rows, sort_users)
    data = load_dataset(name, data_dir, protocol="pfedrec")
    raw_items = np.unique(np.array([r[1] for r in rows]))
    if name == "movielens-100k":  # numeric ids sort as numbers
        raw_items = np.unique(np.array([int(r[1]) for r in rows]))
        expected = expected.set_axis(expected.index.astype(int)).sort_index()
        expected = expected.map(lambda v: [int(i) for i in v] if isinstance(v, list) else int(v))
    assert data.num_users == len(expected) and data.num_items == len(raw_items)
    assert raw_items[data.test_items].tolist() == expected["test"].tolist()
    assert raw_items[data.val_items].tolist() == expected["val"].tolist()
    assert [raw_items[data.user_items(u)].tolist() for u in range(data.num_users)] == [
        sorted(items) for items in expected["train"]]
