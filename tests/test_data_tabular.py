"""Tabular fairness datasets: row counts, split, encoding and label/group balance."""

from __future__ import annotations

import numpy as np
import pytest

from fedsim.data import Tabular, load_dataset
from fedsim.data.synthetic import make_synthetic_tabular
from fedsim.data.tabular import build_tabular

# Rows after cleaning: Adult 32,561 + 16,281 records minus the 3,620 with a "?" (the banner line of adult.test is
# not a record); COMPAS after ProPublica's filter; Bank has no missing values.
ROWS = {"adult": 45222, "adult-hours": 45222, "compas": 6172, "compas-scores": 6172, "bank": 4521}


def check_tabular(data: Tabular, num_rows: int) -> None:
    n_train, n_test = len(data.y_train), len(data.y_test)
    assert n_train + n_test == num_rows
    assert n_test == round(0.4 * num_rows)
    assert data.x_train.shape == (n_train, data.num_features) == (n_train, len(data.feature_names))
    assert data.x_test.shape == (n_test, data.num_features)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64 and data.s_train.dtype == np.int64
    assert not np.isnan(data.x_train).any() and not np.isnan(data.x_test).any()
    # Numericals are min-max scaled on train and one-hot columns are 0/1: every train feature is in [0, 1].
    assert data.x_train.min() == 0.0 and data.x_train.max() == 1.0
    for y, s in ((data.y_train, data.s_train), (data.y_test, data.s_test)):
        assert set(np.unique(y)) == set(range(data.num_classes))
        assert set(np.unique(s)) == set(range(data.num_groups))


@pytest.mark.parametrize("name", list(ROWS))
def test_real_shapes(data_dir, name):
    data = load_dataset(name, data_dir)
    check_tabular(data, ROWS[name])
    sensitive_column = {"adult": "sex", "adult-hours": "race", "compas": "race", "compas-scores": "race",
                        "bank": "age"}[name]
    assert not any(f.split("=")[0] == sensitive_column for f in data.feature_names)  # attribute-blind features


def test_adult_balance(data_dir):
    data = load_dataset("adult", data_dir)
    assert data.group_names == ("Male", "Female") and data.class_names == ("<=50K", ">50K")
    assert 0.30 < data.s_train.mean() < 0.36  # about a third women
    assert 0.22 < data.y_train.mean() < 0.27  # about a quarter earn >50K
    assert data.y_train[data.s_train == 1].mean() < data.y_train[data.s_train == 0].mean() / 2
    assert not any(name.startswith(("sex", "fnlwgt", "education=")) for name in data.feature_names)


def test_adult_hours_is_three_classes_by_three_race_groups(data_dir):
    data = load_dataset("adult-hours", data_dir)
    assert data.class_names == ("<40", "40", ">40") and data.group_names == ("White", "Black", "Other")
    y, s = np.concatenate([data.y_train, data.y_test]), np.concatenate([data.s_train, data.s_test])
    assert np.bincount(y).tolist() == [10087, 21358, 13777]  # the docstring's sizes
    assert np.bincount(s).tolist() == [38903, 4228, 2091]
    over_40 = [np.mean(y[s == a] == 2) for a in range(3)]
    assert over_40[0] > 0.3 and over_40[1] < 0.16  # the multi-class DP gap the task is for
    assert not any(f.startswith(("race", "hours")) for f in data.feature_names)
    assert {"sex=Female", "income=>50K"} <= set(data.feature_names)
    # Same rows and split as adult: the features it shares with adult are the same values.
    adult = load_dataset("adult", data_dir)
    assert np.array_equal(adult.x_train[:, 0], data.x_train[:, 0])  # age, min-max scaled


def test_compas_features(data_dir):
    data = load_dataset("compas", data_dir)
    assert data.group_names == ("Other", "African-American")
    assert (len(data.y_train), len(data.y_test)) == (3703, 2469)
    assert not any(name.startswith("race") for name in data.feature_names)
    assert "c_charge_degree=O" not in data.feature_names
    assert 0.40 < data.y_train.mean() < 0.50 and 0.48 < data.s_train.mean() < 0.54


def test_compas_scores_has_the_authors_columns_on_the_same_rows(data_dir):
    plain, scores = load_dataset("compas", data_dir), load_dataset("compas-scores", data_dir)
    assert scores.feature_names == (
        "age", "priors_count", "decile_score", "days_b_screening_arrest", "c_charge_degree=F", "c_charge_degree=M",
        "sex=Female", "sex=Male", "score_text=High", "score_text=Low", "score_text=Medium",
    )  # fmt: skip
    for split in ("y_train", "s_train", "y_test", "s_test"):
        assert np.array_equal(getattr(plain, split), getattr(scores, split))
    assert np.array_equal(plain.x_train[:, :2], scores.x_train[:, :2])  # age, priors_count
    decile = scores.x_train[:, 2] * 9 + 1  # min-max scaled from 1..10
    assert np.allclose(decile, np.round(decile)) and set(np.round(decile)) == set(range(1, 11))


def test_bank_sensitive_age(data_dir):
    data = load_dataset("bank", data_dir)
    assert "age" not in data.feature_names and data.group_names == ("25-59", "<25 or >=60")
    assert 0.10 < data.y_train.mean() < 0.13  # 521 / 4521 yes
    assert 0.03 < data.s_train.mean() < 0.08


def test_split_depends_on_seed(data_dir):
    a, b = load_dataset("compas", data_dir, seed=1), load_dataset("compas", data_dir, seed=2)
    assert np.array_equal(a.x_train, load_dataset("compas", data_dir, seed=1).x_train)
    assert not np.array_equal(a.y_train, b.y_train)


def test_build_tabular_fits_on_train_only():
    num = np.array([0.0, 10.0, 5.0, 20.0, 40.0])
    cat = np.array(["a", "b", "a", "z", "b"])
    row_id = np.arange(5)  # used as the label, to know which rows landed in each split
    data = build_tabular("toy", {"num": num, "cat": cat}, ["cat"], ["num"], (row_id, [f"r{i}" for i in row_id]),
                         (np.zeros(5, dtype=np.int64), ("all",)), seed=0, test_fraction=0.2)  # fmt: skip
    train, (test,) = data.y_train, data.y_test
    train_categories = sorted(set(cat[train]))
    assert data.feature_names == ("num", *(f"cat={c}" for c in train_categories))
    low, high = num[train].min(), num[train].max()
    assert np.allclose(data.x_test[0, 0], (num[test] - low) / (high - low))
    expected_one_hot = [float(cat[test] == c) for c in train_categories]  # all zeros when unseen in train
    assert data.x_test[0, 1:].tolist() == expected_one_hot


def test_synthetic_tabular_rates():
    data = make_synthetic_tabular()
    check_tabular(data, 4000)
    y, s = np.concatenate([data.y_train, data.y_test]), np.concatenate([data.s_train, data.s_test])
    assert abs(s.mean() - 0.4) < 0.03
    assert abs(y[s == 0].mean() - 0.45) < 0.04 and abs(y[s == 1].mean() - 0.2) < 0.04
