"""Implicit-feedback interaction data with a leave-one-out split under a named protocol (:data:`PROTOCOLS`)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, fields

import numpy as np

from fedsim.data.files import DataError


@dataclass(frozen=True, eq=False)
class Interactions:
    """Users x items positives split leave-one-out; all arrays are int64 and read-only (datasets are cached)."""

    name: str
    protocol: str  # the SplitProtocol that made the split (a key of PROTOCOLS)
    num_users: int
    num_items: int
    train_indptr: np.ndarray  # [num_users+1]: items of u are train_indices[train_indptr[u]:train_indptr[u+1]]
    train_indices: np.ndarray  # [num_train] item ids, ascending within each user (repeats where kept)
    train_sequence: np.ndarray  # [num_train] the same items in time order within each user (same train_indptr)
    test_items: np.ndarray  # [num_users] latest interaction of each user
    test_negatives: np.ndarray  # [num_users, num_negatives] items the user never interacted with
    val_items: np.ndarray | None  # [num_users] second-latest interaction (protocols with a validation item)
    val_negatives: np.ndarray | None  # [num_users, num_negatives] (how they relate to test_negatives: the protocol's joint_negatives)
    user_attributes: dict[str, np.ndarray]  # e.g. {"gender": [num_users]}; {} when none

    def __post_init__(self) -> None:
        arrays = [getattr(self, f.name) for f in fields(self)] + list(self.user_attributes.values())
        for array in arrays:
            if isinstance(array, np.ndarray):
                array.flags.writeable = False

    @property
    def num_train(self) -> int:
        return len(self.train_indices)

    def user_items(self, u: int) -> np.ndarray:
        """Training items of user u, ascending."""
        return self.train_indices[self.train_indptr[u] : self.train_indptr[u + 1]]

    def user_sequence(self, u: int) -> np.ndarray:
        """Training items of user u in time order (oldest first; ties as the leave-one-out): sequential models."""
        return self.train_sequence[self.train_indptr[u] : self.train_indptr[u + 1]]

    def item_train_counts(self) -> np.ndarray:
        """Number of training interactions of every item, int64 [num_items]."""
        return np.bincount(self.train_indices, minlength=self.num_items).astype(np.int64)

    def user_train_counts(self) -> np.ndarray:
        """Number of training interactions of every user, int64 [num_users]."""
        return np.diff(self.train_indptr).astype(np.int64)

    def items_by_popularity(self) -> np.ndarray:
        """Item ids by training interactions, most first (ties: lower id first)."""
        return _by_count(self.item_train_counts())

    def head_item_mask(self, fraction: float = 0.2) -> np.ndarray:
        """True for the round(fraction * num_items) items with the most training interactions."""
        return _top_fraction(self.item_train_counts(), fraction)

    def active_user_mask(self, fraction: float = 0.2) -> np.ndarray:
        """True for the round(fraction * num_users) users with the most training interactions."""
        return _top_fraction(self.user_train_counts(), fraction)


def _top_fraction(counts: np.ndarray, fraction: float) -> np.ndarray:
    """Mask of the round(fraction * len(counts)) largest counts.

    Ties in count go to the lower id, so the mask is deterministic. round() is Python's (half to even);
    ceil would turn 0.2 * 1000 = 200.00000000000003 into 201.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    mask = np.zeros(len(counts), dtype=bool)
    mask[_by_count(counts)[: round(fraction * len(counts))]] = True
    return mask


def _by_count(counts: np.ndarray) -> np.ndarray:
    """Indices by count descending, then index ascending (deterministic ties)."""
    return np.lexsort((np.arange(len(counts)), -counts))


@dataclass(frozen=True)
class SplitProtocol:
    """How raw (user, item, timestamp) rows become a leave-one-out split: one named rule set per
    family of papers, each pinned by a golden test on a hand-written frame
    (tests/test_data_protocols.py).

    ``ties`` says which of a user's rows at one timestamp counts as the later one:
    - "lowest-item": the row with the lower item id (then the earlier row of the file). The
      FedRecGEL authors sort the rows by (uid, iid) and rank each user's timestamps with
      ``rank(method="first", ascending=False)``: among the rows tied at the latest timestamp the
      first in (uid, iid) order, the lowest item id, becomes the test item.
    - "file-order": the row further down the file (a stable sort on the timestamp, as RecBole's
      leave-one-out does).
    - "file-first": the row higher up the file. The PFedRec authors rank each user's timestamps in
      file order with ``rank(method="first", ascending=False)``: the first of the rows tied at the
      latest timestamp gets rank 1 (test), the next rank 2 (validation).

    Every protocol ranks a held-out item pessimistically against its sampled negatives: a
    negative scoring the same counts as ranked above it (fedsim/metrics/leave_one_out.py counts the
    negatives scoring >= the item), which is what the PFedRec and FedRecGEL authors' pandas
    ``rank(method="first")`` over negatives listed before the positive does.
    """

    name: str
    dedupe: bool  # merge a repeated (user, item) pair into its latest row before anything else
    ties: str  # "lowest-item", "file-order" or "file-first", see above
    validation: bool  # hold out the second-latest row as the validation item
    description: str
    # Users with fewer rows are dropped (before the split, duplicates counted unless merged).
    min_interactions: int = 5
    # One draw of 2 x num_negatives per user, the first half the validation negatives and the
    # second the test negatives (so the two lists never share an item); False: two independent
    # draws from two streams of the seed.
    joint_negatives: bool = False


PROTOCOLS: dict[str, SplitProtocol] = {
    p.name: p
    for p in (
        SplitProtocol(
            "fedrecgel", dedupe=False, ties="lowest-item", validation=False,
            description="the FedRecGEL authors' pipeline exactly (../shared/research/fedrecgel.md 3.2): "
            "duplicate (user, item) rows kept, latest row per user = test with ties to the lowest item "
            "id, no validation item; select the best round on test (sampled HR@10)",
        ),
        SplitProtocol(
            "clean", dedupe=True, ties="lowest-item", validation=True,
            description="the FedRecGEL split with duplicates merged (no held-out item also in "
            "training) and the second-latest row held out for validation; select on validation",
        ),
        SplitProtocol(
            "recbole", dedupe=False, ties="file-order", validation=True,
            description="RecBole's leave-one-out (the centralized peers): rows in time order with ties "
            "in file order (a stable sort), last = test, second-last = validation, duplicates kept",
        ),
        SplitProtocol(
            "pfedrec", dedupe=False, ties="file-first", validation=True, min_interactions=3,
            joint_negatives=True,
            description="the PFedRec authors' data.py (../shared/research/pfedrec.md): every rating a "
            "positive, duplicates kept, latest row = test and second-latest = validation with ties to "
            "the row higher up the file, no user filter beyond the 3 rows a split needs (their code "
            "asserts every user has all three; none of ML-100K's or Amazon-Video's has fewer than 5), "
            "198 negatives drawn once per user from the items it never rated: the first 99 for "
            "validation, the last 99 for test. The authors re-index ids by first appearance, fedsim "
            "in sorted order: which raw item is held out or sampled does not depend on it. Select "
            "the test metrics at the best validation HR@10, the later round on ties (best_val_later)",
        ),
    )
}  # fmt: skip


def split_protocol(name: str) -> SplitProtocol:
    if name not in PROTOCOLS:
        raise ValueError(f"unknown data protocol {name!r}; known protocols: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def build_interactions(
    name: str,
    users: np.ndarray,
    items: np.ndarray,
    timestamps: np.ndarray,
    *,
    protocol: str,
    num_negatives: int = 99,
    seed: int = 42,
    min_user_interactions: int | None = None,
    user_attributes: Mapping[str, Mapping[Hashable, int]] | None = None,
) -> Interactions:
    """Build an :class:`Interactions` from raw (user, item, timestamp) rows, in file order.

    users/items may hold any sortable raw ids (str or int); user_attributes maps an attribute name to
    {raw user id: value} and must cover every kept user. Steps (FedRecGEL's preprocessing; what
    ``protocol`` changes is said at each step, see :class:`SplitProtocol`):

    1. every row is a positive, whatever its rating; with ``dedupe`` a repeated (user, item) pair keeps
       only its latest row, so an item can never be both held out and in train (without it, as the
       authors, the other row of a held-out pair stays in training);
    2. keep users with >= min_user_interactions rows (default: the protocol's ``min_interactions``;
       one pass, no item filter);
    3. re-index users and items to 0..n-1 in sorted order of the raw ids; num_items counts every remaining item
       (not only training ones: the authors' max-train-id + 1 breaks when an item only appears in test);
    4. leave-one-out on each user's rows in time order, ties broken by the protocol's rule: the last is the
       test item, with validation the one before it is the validation item, the rest is train;
    5. negatives: per user, num_negatives items drawn uniformly without replacement from the items the user
       never interacted with; test and validation negatives come from two independent streams of seed, so the
       test negatives do not depend on the validation item, or with ``joint_negatives`` from one draw of
       2 x num_negatives (validation the first half, test the second).
    """
    rules = split_protocol(protocol)
    min_user_interactions = rules.min_interactions if min_user_interactions is None else min_user_interactions
    if rules.validation and min_user_interactions < 3:
        raise ValueError("validation needs min_user_interactions >= 3 (test + validation + >= 1 train item)")
    users, items, timestamps = np.asarray(users), np.asarray(items), np.asarray(timestamps)
    if not len(users) == len(items) == len(timestamps):
        raise ValueError("users, items and timestamps must have the same length")
    # Integer codes in sorted raw-id order; a later np.unique on them keeps that order.
    raw_users, u = np.unique(users, return_inverse=True)
    _, i = np.unique(items, return_inverse=True)
    t, row = timestamps, np.arange(len(users))

    # 1. dedupe: sort by (u, i, t) and keep the last row of each (u, i) run.
    if rules.dedupe:
        order = np.lexsort((timestamps, i, u))
        u, i, t, row = u[order], i[order], t[order], row[order]
        last_of_pair = np.ones(len(u), dtype=bool)
        last_of_pair[:-1] = (u[1:] != u[:-1]) | (i[1:] != i[:-1])
        u, i, t, row = u[last_of_pair], i[last_of_pair], t[last_of_pair], row[last_of_pair]

    # 2. user filter.
    keep = np.bincount(u)[u] >= min_user_interactions
    if not keep.any():
        raise DataError(f"{name}: no user has >= {min_user_interactions} interactions")
    u, i, t, row = u[keep], i[keep], t[keep], row[keep]

    # 3. re-index.
    kept_users, u = np.unique(u, return_inverse=True)
    kept_items, i = np.unique(i, return_inverse=True)
    num_users, num_items = len(kept_users), len(kept_items)

    # 4. leave-one-out: each user's rows oldest first, so the last row is the test item. lexsort's
    # last key is the primary one.
    if rules.ties == "lowest-item":  # later = lower item id, then earlier in the file
        order = np.lexsort((-row, -i, t, u))
    elif rules.ties == "file-first":  # later = higher up the file
        order = np.lexsort((-row, t, u))
    else:  # "file-order": later = further down the file
        order = np.lexsort((row, t, u))
    u, i = u[order].astype(np.int64), i[order].astype(np.int64)
    ends = np.cumsum(np.bincount(u, minlength=num_users))  # one past each user's last row
    held_out = [ends - 1, ends - 2] if rules.validation else [ends - 1]
    test_items = i[held_out[0]]
    val_items = i[held_out[1]] if rules.validation else None
    is_train = np.ones(len(u), dtype=bool)
    is_train[np.concatenate(held_out)] = False
    train_sequence = i[is_train]  # still oldest first within each user
    train_indices = train_sequence[np.lexsort((train_sequence, u[is_train]))]
    train_indptr = np.zeros(num_users + 1, dtype=np.int64)
    train_indptr[1:] = np.cumsum(np.bincount(u[is_train], minlength=num_users))

    # 5. negatives.
    test_rng, val_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    test_negatives = np.empty((num_users, num_negatives), dtype=np.int64)
    val_negatives = np.empty((num_users, num_negatives), dtype=np.int64) if rules.validation else None
    starts = np.concatenate(([0], ends[:-1]))
    never = np.ones(num_items, dtype=bool)
    for user in range(num_users):
        seen = i[starts[user] : ends[user]]
        never[seen] = False
        pool = np.flatnonzero(never)
        never[seen] = True
        wanted = 2 * num_negatives if rules.joint_negatives else num_negatives
        if len(pool) < wanted:
            raise DataError(
                f"{name}: user {raw_users[kept_users[user]]} has only {len(pool)} never-seen items, "
                f"fewer than the {wanted} negatives protocol {rules.name!r} draws; lower num_negatives"
            )
        if rules.joint_negatives:
            val_negatives[user], test_negatives[user] = test_rng.choice(pool, size=wanted, replace=False).reshape(2, -1)
            continue
        test_negatives[user] = test_rng.choice(pool, size=num_negatives, replace=False)
        if val_negatives is not None:
            val_negatives[user] = val_rng.choice(pool, size=num_negatives, replace=False)

    attributes = {}
    for attribute, by_raw_id in (user_attributes or {}).items():
        missing = [raw for raw in raw_users[kept_users] if raw not in by_raw_id]
        if missing:
            raise DataError(f"{name}: attribute {attribute!r} is missing for users {missing[:5]}")
        attributes[attribute] = np.array([by_raw_id[raw] for raw in raw_users[kept_users]], dtype=np.int64)

    return Interactions(
        name=name,
        protocol=rules.name,
        num_users=num_users,
        num_items=num_items,
        train_indptr=train_indptr,
        train_indices=train_indices,
        train_sequence=train_sequence,
        test_items=test_items,
        test_negatives=test_negatives,
        val_items=val_items,
        val_negatives=val_negatives,
        user_attributes=attributes,
    )
