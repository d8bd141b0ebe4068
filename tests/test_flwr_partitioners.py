"""fedsim's and flwr-datasets' partitioners, each used as the other, on the same real data:
MovieLens-100K's rating rows (the user column) and Adult's rows (label, sex)."""

from __future__ import annotations

import numpy as np
import pytest
from datasets import Dataset
from flwr_datasets.partitioner import DirichletPartitioner, NaturalIdPartitioner

from fedsim.data import load_dataset
from fedsim.federation import load_federation
from fedsim.partition import make_partition
from fedsim.partition.flwr_adapter import FedsimPartitioner
from fedsim.partition.flwr_partitioners import column_array
from fedsim.spec import resolve

ADULT_SPEC = {"dataset": "adult", "method": "fedavg", "model": "logreg", "num_clients": 8,
              "partition.column": "label", "partition.alpha": 0.3, "seed": 5}


@pytest.fixture(scope="module")
def rating_rows(data_dir) -> Dataset:
    """u.data as a Hugging Face Dataset: user, item and the row's number."""
    users, items = np.loadtxt(data_dir / "movielens-100k/u.data", dtype=np.int64,
                              usecols=(0, 1), unpack=True)
    return Dataset.from_dict({"user": users, "item": items, "row": np.arange(users.size)})


@pytest.fixture(scope="module")
def adult_rows(data_dir) -> Dataset:
    """Adult's training split (data.seed 0) as a Dataset: label, sex and the row's number."""
    adult = load_dataset("adult", data_dir)
    return Dataset.from_dict({"label": adult.y_train, "sex": adult.s_train,
                              "row": np.arange(adult.y_train.size)})


def rows_of(partitioner, k: int) -> np.ndarray:
    return np.sort(column_array(partitioner.load_partition(k), "row"))


@pytest.mark.slow
def test_fedsim_natural_is_flwr_natural_id_on_the_user_column(rating_rows):
    """Both ways: fedsim's natural as a flwr-datasets partitioner equals NaturalIdPartitioner,
    and "flwr:natural" in fedsim equals fedsim's natural."""
    theirs = NaturalIdPartitioner(partition_by="user")
    theirs.dataset = rating_rows
    ours = FedsimPartitioner("natural", ids_by="user")
    ours.dataset = rating_rows
    assert ours.num_partitions == theirs.num_partitions == 943
    for k in (0, 1, 500, 942):
        np.testing.assert_array_equal(rows_of(ours, k), rows_of(theirs, k))
    users = column_array(rating_rows, "user")
    fedsim_parts = make_partition("natural", num_rows=users.size, num_clients=0, seed=0, ids=users)
    flwr_parts = make_partition("flwr:natural", num_rows=users.size, num_clients=0, seed=0,
                                ids=users)
    assert len(flwr_parts) == len(fedsim_parts)
    for mine, theirs_rows in zip(fedsim_parts, flwr_parts):
        np.testing.assert_array_equal(mine, theirs_rows)


@pytest.mark.parametrize(("name", "arrays", "options"), [
    ("dirichlet_capped", {"column_by": "sex"}, {"alpha": 1.0, "min_per_value": 20}),
    ("hetero", {"column_by": "sex", "labels_by": "label"}, {}),
    ("iid", {}, {}),
])
def test_a_fedsim_partitioner_through_the_adapter_gives_its_own_rows(adult_rows, name, arrays,
                                                                     options):
    adapter = FedsimPartitioner(name, num_partitions=6, seed=3, **arrays, **options)
    adapter.dataset = adult_rows
    direct = make_partition(name, num_rows=adult_rows.num_rows, num_clients=6, seed=3,
                            column=column_array(adult_rows, "sex"),
                            labels=column_array(adult_rows, "label"), **options)
    assert adapter.num_partitions == 6
    for k in range(6):
        np.testing.assert_array_equal(rows_of(adapter, k), direct[k])
        # The partition holds those rows' values, not only their numbers.
        np.testing.assert_array_equal(column_array(adapter.load_partition(k), "label"),
                                      column_array(adult_rows, "label")[direct[k]])


@pytest.mark.slow
def test_flwr_dirichlet_named_in_a_spec_gives_flwr_datasets_client_sizes(data_dir):
    """partitioner = "flwr:dirichlet" over Adult's train and test rows: each client's size is
    what DirichletPartitioner gives for the same labels, alpha, min size and seed."""
    spec = resolve({**ADULT_SPEC, "partitioner": "flwr:dirichlet", "partition.min_size": 50})
    federation = load_federation(spec)
    labels = np.concatenate([federation.dataset.y_train, federation.dataset.y_test])
    theirs = DirichletPartitioner(num_partitions=8, partition_by="label", alpha=0.3,
                                  min_partition_size=50, seed=5)
    theirs.dataset = Dataset.from_dict({"label": labels})
    expected = [theirs.load_partition(k).num_rows for k in range(8)]
    sizes = [len(train) + len(test) for train, test in zip(federation.train_parts,
                                                           federation.test_parts)]
    assert sizes == expected and min(sizes) >= 50
    # Skewed, as a Dirichlet split with alpha 0.3 is: some client's positive share is far from
    # the population's.
    share = [labels[np.concatenate([tr, te + len(federation.dataset.y_train)])].mean()
             for tr, te in zip(federation.train_parts, federation.test_parts)]
    assert max(abs(s - labels.mean()) for s in share) > 0.1


def test_flwr_iid_named_in_a_spec_shuffles_before_its_contiguous_shards():
    """IidPartitioner cuts contiguous shards; fedsim shuffles the rows first (as flwr-datasets'
    FederatedDataset does), so a client's rows are spread over the data, near-equal in size."""
    spec = resolve({"dataset": "synthetic-tabular", "method": "fedavg", "model": "logreg",
                    "partitioner": "flwr:iid", "num_clients": 4})
    federation = load_federation(spec)
    sizes = [len(tr) + len(te) for tr, te in zip(federation.train_parts, federation.test_parts)]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == 4000
    first = federation.train_parts[0]
    assert first.max() - first.min() > 2 * len(first)  # not one contiguous block of rows


def test_adapter_and_spec_errors(adult_rows):
    with pytest.raises(ValueError, match=r"partitioner 'powerlaw' is unknown"):
        FedsimPartitioner("powerlaw")
    missing = FedsimPartitioner("dirichlet", num_partitions=3, column_by="race")
    missing.dataset = adult_rows
    with pytest.raises(ValueError, match=r"column 'race' is not in the dataset; its columns are "
                                         r"\['label', 'sex', 'row'\]"):
        missing.load_partition(0)
    with pytest.raises(ValueError, match=r"partition_id=3 is invalid; expected 0 <= id < 3"):
        iid = FedsimPartitioner("iid", num_partitions=3)
        iid.dataset = adult_rows
        iid.load_partition(3)
    with pytest.raises(ValueError, match=r"flwr:dirichlet \(flwr-datasets' DirichletPartitioner\) "
                                         r"with alpha=0.01, min_size=1000"):
        make_partition("flwr:dirichlet", num_rows=adult_rows.num_rows, num_clients=20, seed=0,
                       column=column_array(adult_rows, "label"), alpha=0.01, min_size=1000)
    with pytest.raises(Exception, match=r"partitioner = 'flwr:natural' needs a recommendation"):
        resolve({**ADULT_SPEC, "partitioner": "flwr:natural", "num_clients": 0})
    with pytest.raises(Exception, match=r"partitioner = 'flwr:dirichlet' needs num_clients >= 1"):
        resolve({**ADULT_SPEC, "partitioner": "flwr:dirichlet", "num_clients": 0})
