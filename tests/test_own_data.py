"""A researcher's own data: an interactions file (CSV or RecBole .inter) and a table (CSV or
atomic file) go through the named datasets' preprocessing, split protocols and specs.

The strongest checks write a named dataset's raw rows into such a file and ask for the very same
split: MovieLens-100K's u.data as a CSV and as a .inter file under every protocol, Adult's
pooled rows as a CSV.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import tomllib
from pathlib import Path

import numpy as np
import pytest

from fedsim.data import DataError, load_dataset
from fedsim.data.interactions import PROTOCOLS
from fedsim.data.tabular import _adult_columns
from fedsim.federation import load_federation
from fedsim.spec import SpecError, flatten, resolve
from tests.helpers import run_fake

SPLIT_ARRAYS = ("train_indptr", "train_indices", "train_sequence", "test_items", "test_negatives",
                "val_items", "val_negatives")
ADULT_NUMERICAL = ["age", "education-num", "capital-gain", "capital-loss", "hours-per-week"]
ADULT_CATEGORICAL = ["workclass", "marital-status", "occupation", "relationship", "race",
                     "native-country"]


def write_csv(path: Path, header: list[str], rows) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_inter(path: Path, header: list[str], rows) -> Path:
    path.write_text("\t".join(header) + "\n" + "".join("\t".join(row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="module")
def ml100k_rows(data_dir) -> list[list[str]]:
    """u.data's rows as text: user, item, rating, timestamp."""
    text = (data_dir / "movielens-100k/u.data").read_text()
    return [line.split("\t") for line in text.splitlines()]


def assert_same_split(ours, named) -> None:
    assert (ours.num_users, ours.num_items, ours.protocol) == (named.num_users, named.num_items,
                                                               named.protocol)
    for name in SPLIT_ARRAYS:
        expected = getattr(named, name)
        if expected is None:
            assert getattr(ours, name) is None, name
        else:
            np.testing.assert_array_equal(getattr(ours, name), expected, err_msg=name)


@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
@pytest.mark.slow
def test_movielens_as_csv_and_inter_split_as_the_named_dataset(protocol, ml100k_rows, tmp_path):
    named = load_dataset("movielens-100k", protocol=protocol)
    as_csv = write_csv(tmp_path / "ratings.csv", ["user", "movie", "stars", "when"], ml100k_rows)
    ours = load_dataset("interactions-file", path=str(as_csv), user_column="user",
                        item_column="movie", time_column="when", protocol=protocol)
    assert_same_split(ours, named)
    as_inter = write_inter(tmp_path / "ml.inter", ["user_id:token", "item_id:token",
                                                   "rating:float", "timestamp:float"], ml100k_rows)
    assert_same_split(load_dataset("interactions-file", path=str(as_inter), file_format="inter",
                                   protocol=protocol), named)


@pytest.mark.parametrize("protocol", ["recbole", "clean"])
def test_without_a_time_column_file_order_is_time_order(protocol, ml100k_rows, tmp_path):
    """Rows written oldest first without their timestamps give MovieLens' own split: ties at one
    timestamp written in the order the protocol reads them (recbole: file order; clean: the
    lower item id later, then the earlier row), so later in the file must mean later."""
    rows = np.arange(len(ml100k_rows))
    items, times = (np.array([int(row[col]) for row in ml100k_rows]) for col in (1, 3))
    oldest_first = (np.lexsort((rows, times)) if protocol == "recbole"
                    else np.lexsort((-rows, -items, times)))
    ordered = [ml100k_rows[i][:3] for i in oldest_first]
    path = write_csv(tmp_path / "ordered.csv", ["user_id", "item_id", "rating"], ordered)
    ours = load_dataset("interactions-file", path=str(path), time_column="", protocol=protocol)
    assert_same_split(ours, load_dataset("movielens-100k", protocol=protocol))


@pytest.mark.slow
def test_rating_column_keeps_rows_rated_at_least_min_rating(ml100k_rows, tmp_path):
    everything = write_csv(tmp_path / "all.csv", ["user_id", "item_id", "rating", "timestamp"],
                           ml100k_rows)
    liked = [row for row in ml100k_rows if float(row[2]) >= 4]
    only_liked = write_csv(tmp_path / "liked.csv", ["user_id", "item_id", "rating", "timestamp"],
                           liked)
    filtered = load_dataset("interactions-file", path=str(everything), rating_column="rating",
                            min_rating=4.0)
    assert_same_split(filtered, load_dataset("interactions-file", path=str(only_liked)))
    assert filtered.num_train < load_dataset("interactions-file", path=str(everything)).num_train


def test_integer_times_keep_their_order_past_float_precision(tmp_path):
    """Nanosecond times 1 ns apart (as floats they would tie, and the fedrecgel protocol would
    hold out the lowest item of the tie): the latest row is the test item."""
    start = 1_700_000_000_000_000_000
    rows = [[user, item, str(start + t)] for user, items in (("u", "abcde"), ("v", "fghij"))
            for t, item in enumerate(items)]
    path = write_csv(tmp_path / "ns.csv", ["user_id", "item_id", "timestamp"], rows)
    data = load_dataset("interactions-file", path=str(path), num_negatives=1, protocol="fedrecgel")
    np.testing.assert_array_equal(data.test_items, [4, 9])  # "e" and "j", the last rows


def test_text_ids_work_and_integer_ids_sort_as_numbers(tmp_path):
    rows = [[user, item, str(t)] for t, (user, item) in enumerate(
        [("9", i) for i in "abcdef"] + [("10", i) for i in "cdefgh"])]
    data = load_dataset("interactions-file", path=str(write_csv(
        tmp_path / "ids.csv", ["user_id", "item_id", "timestamp"], rows)), num_negatives=1)
    # User "9" sorts before "10" (as numbers), so it is user 0; the items are text, a = 0.
    assert data.num_users == 2 and data.num_items == 8
    np.testing.assert_array_equal(data.test_items, [5, 7])
    np.testing.assert_array_equal(data.user_items(0), [0, 1, 2, 3])


@pytest.mark.slow
def test_adult_rows_as_a_csv_prepare_as_adult(data_dir, tmp_path):
    """The same rows and columns as load_adult reads, with income the label and sex the
    sensitive column: the same features, split and labels; groups in sorted order (Female
    first, where adult codes Male = 0)."""
    names = ADULT_NUMERICAL + ADULT_CATEGORICAL + ["sex", "income"]
    columns = _adult_columns(data_dir, names)
    path = write_csv(tmp_path / "adult.csv", names, zip(*(columns[n] for n in names)))
    adult = load_dataset("adult", seed=3)
    ours = load_dataset("tabular-file", path=str(path), label_column="income",
                        sensitive_column="sex", seed=3)
    assert ours.feature_names == adult.feature_names
    for split in ("train", "test"):
        np.testing.assert_array_equal(getattr(ours, f"x_{split}"), getattr(adult, f"x_{split}"))
        np.testing.assert_array_equal(getattr(ours, f"y_{split}"), getattr(adult, f"y_{split}"))
        np.testing.assert_array_equal(getattr(ours, f"s_{split}"), 1 - getattr(adult, f"s_{split}"))
    assert ours.class_names == adult.class_names and ours.group_names == ("Female", "Male")


def test_an_atomic_files_types_decide_numerical_or_one_hot(tmp_path):
    """"zip" holds integers: a float column in a CSV, but one-hot when declared a token."""
    rows = [[str(i % 3), str(10 + i % 4), str(i % 2), str(i * 0.5)] for i in range(20)]
    header = ["zip", "label", "sensitive", "score"]
    from_csv = load_dataset("tabular-file", path=str(write_csv(tmp_path / "t.csv", header, rows)))
    typed = write_inter(tmp_path / "t.inter", ["zip:token", "label:token", "sensitive:token",
                                               "score:float"], rows)
    from_inter = load_dataset("tabular-file", path=str(typed), file_format="inter")
    assert from_csv.feature_names == ("zip", "score")
    assert from_inter.feature_names == ("score", "zip=0", "zip=1", "zip=2")
    assert from_inter.class_names == ("10", "11", "12", "13")  # four classes, as numbers


@pytest.mark.parametrize(("text", "kwargs", "message"), [
    ("user,item\n1,2\n", {}, r"data.user_column = 'user_id' is not a column of the file; its "
                            r"columns are 'user', 'item'"),
    ("user_id,item_id,timestamp\n1,2,monday\n", {},
     r"line 2: data.time_column = 'timestamp' must hold numbers, got 'monday'"),
    ("user_id,item_id,timestamp\n1,2,3\n1,2\n", {}, r"line 3: 2 fields, expected 3"),
    ("user_id,item_id,timestamp\n1,,3\n", {}, r"line 2: column 'item_id' \(data.item_column\) "
                                             r"is empty"),
    ("user_id,item_id,timestamp\n", {}, "holds no data rows"),
    ("user_id\titem_id\n1\t2\n", {"file_format": "inter"}, r"header field 'user_id' is not "
                                                          r"name:type"),
    ("user_id,item_id,timestamp,rating\n1,2,3,1\n", {"rating_column": "rating", "min_rating": 4.0},
     r"no row has rating >= data.min_rating = 4.0"),
])
def test_bad_interactions_files_name_the_file_and_the_problem(tmp_path, text, kwargs, message):
    path = tmp_path / "mine.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=message) as error:
        load_dataset("interactions-file", path=str(path), **kwargs)
    assert str(path) in str(error.value)


def test_bad_tables_and_paths(tmp_path):
    with pytest.raises(DataError, match=r"data.path = '.*nowhere.csv': no such file"):
        load_dataset("tabular-file", path=str(tmp_path / "nowhere.csv"))
    one_class = write_csv(tmp_path / "one.csv", ["x", "label", "sensitive"], [["1", "a", "0"],
                                                                               ["2", "a", "1"]])
    with pytest.raises(DataError, match=r"data.label_column = 'label' holds one value \('a'\)"):
        load_dataset("tabular-file", path=str(one_class))
    no_features = write_csv(tmp_path / "bare.csv", ["label", "sensitive"], [["0", "0"], ["1", "1"]])
    with pytest.raises(DataError, match="no feature column"):
        load_dataset("tabular-file", path=str(no_features))
    gap = write_csv(tmp_path / "gap.csv", ["age", "label", "sensitive"], [["30", "0", "0"],
                                                                         ["", "1", "1"]])
    with pytest.raises(DataError, match=r"gap.csv line 3: column 'age' \(a feature\) is empty"):
        load_dataset("tabular-file", path=str(gap))
    with pytest.raises(SpecError, match=r"dataset = 'tabular-file' reads your own file: set "
                                        r"data.path"):
        resolve({"dataset": "tabular-file", "method": "fedavg", "model": "logreg",
                 "partitioner": "iid", "num_clients": 2})


def test_the_readme_examples_are_valid_specs():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("\n## Your own data\n")[1].split("\n## ")[0]
    examples = [resolve(flatten(tomllib.loads(block)))
                for block in re.findall(r"```toml\n(.*?)```", section, re.S)]
    assert [spec["dataset"] for spec in examples] == ["interactions-file", "tabular-file"]


def test_the_task_comes_from_the_dataset(tmp_path):
    """A table takes the classification methods, an interactions file the recommenders."""
    with pytest.raises(SpecError, match=r"dataset = 'tabular-file' \(classification\)"):
        resolve({"dataset": "tabular-file", "data.path": "t.csv"})  # default method fedncf
    with pytest.raises(SpecError, match=r"dataset = 'interactions-file' \(recommendation\)"):
        resolve({"dataset": "interactions-file", "data.path": "i.csv", "method": "fedavg",
                 "model": "logreg"})


@pytest.mark.slow
def test_a_spec_on_an_interactions_csv_federates_and_trains_two_rounds(ml100k_rows, tmp_path):
    """The file named in a spec gives the named dataset's federation (one client per user), and
    FedNCF runs two rounds in-process (the FakeGrid, no Ray) on its first 100 users' rows."""
    path = write_csv(tmp_path / "ratings.csv", ["user", "movie", "stars", "when"], ml100k_rows)
    spec = {"dataset": "interactions-file", "data.path": str(path), "data.user_column": "user",
            "data.item_column": "movie", "data.time_column": "when", "data.protocol": "recbole",
            "rounds": 2, "fraction": 0.1, "eval_every": 2, "eval_full_every": 2}
    ours = load_federation(resolve(spec))
    assert_same_split(ours.dataset, load_dataset("movielens-100k", protocol="recbole"))
    assert ours.task == "recommendation" and ours.num_clients == 943
    small = write_csv(tmp_path / "small.csv", ["user", "movie", "stars", "when"],
                      [row for row in ml100k_rows if int(row[0]) <= 100])
    _, history, _ = run_fake({**spec, "data.path": str(small)})
    assert [record["round"] for record in history] == [0, 1, 2]
    assert history[2]["hr@10"] > history[0]["hr@10"]  # it trained (0.095 -> 0.263 when written)


def test_a_spec_on_a_table_federates_with_dirichlet(tmp_path):
    rng = np.random.default_rng(0)
    rows = [[f"{x:.3f}", rng.choice(["a", "b"]), str(y), str(s)] for x, y, s in
            zip(rng.normal(size=400), rng.integers(0, 2, 400), rng.integers(0, 2, 400))]
    path = write_inter(tmp_path / "table.inter", ["x:float", "colour:token", "y:token",
                                                "group:token"], rows)
    federation = load_federation(resolve({
        "dataset": "tabular-file", "data.path": str(path), "data.format": "inter",
        "data.label_column": "y", "data.sensitive_column": "group", "method": "fedavg",
        "model": "logreg", "partitioner": "dirichlet", "num_clients": 4,
        "partition.min_size": 5}))
    assert federation.task == "classification" and federation.num_clients == 4
    assert federation.dataset.feature_names == ("x", "colour=a", "colour=b")
    assert sum(len(p) for p in federation.train_parts + federation.test_parts) == 400


@pytest.mark.slow
def test_fedsim_run_on_an_interactions_csv(ml100k_rows, tmp_path):
    """`fedsim run`'s engine (Flower's simulation on Ray) on a file named in a spec."""
    from fedsim.runner.simulation import simulate

    path = write_csv(tmp_path / "ratings.csv", ["user_id", "item_id", "rating", "timestamp"],
                     ml100k_rows)
    summary, out = simulate(resolve({"dataset": "interactions-file", "data.path": str(path),
                                     "rounds": 2, "fraction": 0.02, "nodes": 2}),
                            out_dir=tmp_path / "run")
    written = json.loads((out / "summary.json").read_text())
    assert written["dataset"] == "interactions-file" and written["num_clients"] == 943
    assert written["rounds"] == 2
    # The file read, by content: there is no registry checksum to name it.
    assert written["data_files"] == [{"file": str(path), "path": str(path.resolve()),
                                      "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}]
