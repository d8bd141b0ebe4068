"""The clients' negative sampling: k distinct non-positive items per positive, uniformly."""

import numpy as np
import pytest
from scipy.stats import chisquare

from clients.fedncf import distinct_negatives


def test_negatives_are_distinct_non_positive_and_uniform():
    positives = np.array([1, 5, 7])
    drawn = distinct_negatives(np.random.default_rng(0), positives, 10, 20_000, 4)
    assert drawn.shape == (20_000, 4)
    assert not np.isin(drawn, positives).any()
    assert all(len(set(row)) == 4 for row in drawn)
    counts = np.bincount(drawn.ravel(), minlength=10)[[0, 2, 3, 4, 6, 8, 9]]
    assert chisquare(counts).pvalue > 0.001  # each allowed item as likely as any other


def test_every_allowed_item_when_k_equals_what_is_left():
    drawn = distinct_negatives(np.random.default_rng(1), np.array([0, 1]), 6, 50, 4)
    assert (np.sort(drawn, axis=1) == [2, 3, 4, 5]).all()


def test_too_few_items_is_an_error():
    with pytest.raises(ValueError, match="4 distinct negatives asked from 3"):
        distinct_negatives(np.random.default_rng(0), np.array([0, 1]), 5, 1, 4)
