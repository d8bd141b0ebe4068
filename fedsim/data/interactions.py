"""Implicit-feedback interaction data with a leave-one-out split (the FedRecGEL authors' protocol, deduplicated)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, fields

import numpy as np

from fedsim.data.files import DataError


@dataclass(frozen=True, eq=False)
class Interactions:
    """Users x items positives split leave-one-out; all arrays are int64 and read-only (datasets are cached)."""

    name: str
    num_users: int
    num_items: int
    train_indptr: np.ndarray  # [num_users+1]: items of u are train_indices[train_indptr[u]:train_indptr[u+1]]
    train_indices: np.ndarray  # [num_train] item ids, ascending within each user
    train_sequence: np.ndarray  # [num_train] the same items in time order within each user (same train_indptr)
    test_items: np.ndarray  # [num_users] latest interaction of each user
    test_negatives: np.ndarray  # [num_users, num_negatives] items the user never interacted with
    val_items: np.ndarray | None  # [num_users] second-latest interaction (validation=True)
    val_negatives: np.ndarray | None  # [num_users, num_negatives], drawn independently of test_negatives
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
    order = np.lexsort((np.arange(len(counts)), -counts))  # count descending, then id ascending
    mask = np.zeros(len(counts), dtype=bool)
    mask[order[: round(fraction * len(counts))]] = True
    return mask


def build_interactions(
    name: str,
    users: np.ndarray,
    items: np.ndarray,
    timestamps: np.ndarray,
    *,
    validation: bool,
    num_negatives: int = 99,
    seed: int = 42,
    min_user_interactions: int = 5,
    user_attributes: Mapping[str, Mapping[Hashable, int]] | None = None,
) -> Interactions:
    """Build an :class:`Interactions` from raw (user, item, timestamp) rows.

    users/items may hold any sortable raw ids (str or int); user_attributes maps an attribute name to
    {raw user id: value} and must cover every kept user. Steps (FedRecGEL's preprocessing, with duplicates removed):

    1. every row is a positive, whatever its rating; a repeated (user, item) pair keeps only its latest
       timestamp, so an item can never be both held out and in train;
    2. keep users with >= min_user_interactions distinct items (one pass, no item filter);
    3. re-index users and items to 0..n-1 in sorted order of the raw ids; num_items counts every remaining item
       (not only training ones: the authors' max-train-id + 1 breaks when an item only appears in test);
    4. leave-one-out on the order (timestamp, item id): the last is the test item, with validation the one before
       it is the validation item, the rest is train. On equal timestamps the higher item id counts as later,
       which is what the authors' rank(method="first") over rows sorted by (uid, iid) does;
    5. negatives: per user, num_negatives items drawn uniformly without replacement from the items the user
       never interacted with; test and validation negatives come from two independent streams of seed, so the
       test negatives do not depend on `validation`.
    """
    if validation and min_user_interactions < 3:
        raise ValueError("validation needs min_user_interactions >= 3 (test + validation + >= 1 train item)")
    users, items, timestamps = np.asarray(users), np.asarray(items), np.asarray(timestamps)
    if not len(users) == len(items) == len(timestamps):
        raise ValueError("users, items and timestamps must have the same length")
    # Integer codes in sorted raw-id order; a later np.unique on them keeps that order.
    raw_users, u = np.unique(users, return_inverse=True)
    _, i = np.unique(items, return_inverse=True)

    # 1. dedupe: sort by (u, i, t) and keep the last row of each (u, i) run.
    order = np.lexsort((timestamps, i, u))
    u, i, t = u[order], i[order], timestamps[order]
    last_of_pair = np.ones(len(u), dtype=bool)
    last_of_pair[:-1] = (u[1:] != u[:-1]) | (i[1:] != i[:-1])
    u, i, t = u[last_of_pair], i[last_of_pair], t[last_of_pair]

    # 2. user filter.
    keep = np.bincount(u)[u] >= min_user_interactions
    if not keep.any():
        raise DataError(f"{name}: no user has >= {min_user_interactions} distinct items")
    u, i, t = u[keep], i[keep], t[keep]

    # 3. re-index.
    kept_users, u = np.unique(u, return_inverse=True)
    kept_items, i = np.unique(i, return_inverse=True)
    num_users, num_items = len(kept_users), len(kept_items)

    # 4. leave-one-out: rows sorted by (u, t, i), so each user's last row is the test item.
    order = np.lexsort((i, t, u))
    u, i = u[order].astype(np.int64), i[order].astype(np.int64)
    ends = np.cumsum(np.bincount(u, minlength=num_users))  # one past each user's last row
    held_out = [ends - 1, ends - 2] if validation else [ends - 1]
    test_items = i[held_out[0]]
    val_items = i[held_out[1]] if validation else None
    is_train = np.ones(len(u), dtype=bool)
    is_train[np.concatenate(held_out)] = False
    train_sequence = i[is_train]  # still in (u, t, i) order
    train_indices = train_sequence[np.lexsort((train_sequence, u[is_train]))]
    train_indptr = np.zeros(num_users + 1, dtype=np.int64)
    train_indptr[1:] = np.cumsum(np.bincount(u[is_train], minlength=num_users))

    # 5. negatives.
    test_rng, val_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    test_negatives = np.empty((num_users, num_negatives), dtype=np.int64)
    val_negatives = np.empty((num_users, num_negatives), dtype=np.int64) if validation else None
    starts = np.concatenate(([0], ends[:-1]))
    never = np.ones(num_items, dtype=bool)
    for user in range(num_users):
        seen = i[starts[user] : ends[user]]
        never[seen] = False
        pool = np.flatnonzero(never)
        never[seen] = True
        if len(pool) < num_negatives:
            raise DataError(
                f"{name}: user {raw_users[kept_users[user]]} has only {len(pool)} never-seen items, "
                f"fewer than num_negatives={num_negatives}; lower num_negatives"
            )
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
