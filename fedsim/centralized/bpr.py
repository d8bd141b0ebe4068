"""BPR training data of a client: its (user, positive) pairs, shuffled, with sampled negatives.

The draw order is part of the contract (the single-client equivalence test re-implements it):
each epoch takes ``rng.permutation`` of the pairs, then one negative per pair in that order,
``rng.integers(num_items)``, and redraws, in index order and until none is left, the negatives
that are a training item of their user. Only training items are excluded: the held-out items
are unknown to the trainer.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from fedsim.data import Interactions


class BPRSampler:
    """The training pairs of ``users`` in ``data`` and their epoch-wise batches."""

    def __init__(self, data: Interactions, users: np.ndarray):
        self.num_items = data.num_items
        users = np.asarray(users, dtype=np.int64)
        counts = data.train_indptr[users + 1] - data.train_indptr[users]
        self.users = np.repeat(users, counts)
        self.items = (np.concatenate([data.user_items(int(u)) for u in users])
                      if len(users) else np.zeros(0, np.int64))
        # Pairs as one sorted int64 key each: membership of a (user, item) is a binary search.
        self._keys = np.sort(self.users * self.num_items + self.items)

    def __len__(self) -> int:
        return len(self.users)

    def is_positive(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        keys = users * self.num_items + items
        where = np.minimum(np.searchsorted(self._keys, keys), len(self._keys) - 1)
        return self._keys[where] == keys

    def negatives(self, rng: np.random.Generator, users: np.ndarray) -> np.ndarray:
        """One item per user that is not among that user's training items."""
        negatives = rng.integers(self.num_items, size=len(users))
        bad = self.is_positive(users, negatives)
        while bad.any():
            negatives[bad] = rng.integers(self.num_items, size=int(bad.sum()))
            bad[bad] = self.is_positive(users[bad], negatives[bad])
        return negatives

    def epoch(self, rng: np.random.Generator, batch_size: int
              ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(users, positives, negatives) batches covering every pair once, in a random order."""
        order = rng.permutation(len(self))
        users, positives = self.users[order], self.items[order]
        negatives = self.negatives(rng, users)
        for start in range(0, len(order), batch_size):
            end = start + batch_size
            yield users[start:end], positives[start:end], negatives[start:end]
