"""The spec: defaults, checks with clear errors, TOML round trip, and the flwr run-config table."""

import tomllib
from pathlib import Path

import pytest

from fedsim import spec as specs

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_are_valid_and_declared_in_pyproject():
    assert specs.resolve() == specs.DEFAULTS
    # `flwr run --run-config` only overrides keys declared in [tool.flwr.app.config].
    table = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    assert specs.flatten(table) == specs.DEFAULTS


def test_docs_reference_is_generated_from_the_schema():
    assert (ROOT / "docs" / "spec.md").read_text() == specs.markdown_reference()


@pytest.mark.parametrize("key, value, words", [
    ("fedncf.server_lrr", 0.1, ["unknown spec key", "fedncf.server_lrr", "fedncf.server_lr"]),
    ("rounds", "ten", ["rounds", "'ten'", "int", "str"]),
    ("rounds", 0, ["rounds", "0", "[1, 100000]"]),
    ("fraction", 0.0, ["fraction", "(0, 1]"]),
    ("fraction", 1.5, ["fraction", "1.5"]),
    ("fedncf.server_lr", -0.1, ["fedncf.server_lr", "-0.1"]),
    ("dataset", "imagenet", ["dataset", "imagenet", "filmtrust"]),
    ("cohort", 1, ["cohort", "bool", "int"]),
    ("data.protocol", "paper", ["data.protocol", "'paper'", "'fedrecgel'", "'clean'"]),
    ("fraction", float("nan"), ["fraction", "nan"]),
])
def test_bad_values_name_key_value_and_what_is_allowed(key, value, words):
    with pytest.raises(specs.SpecError) as err:
        specs.resolve({key: value})
    for word in words:
        assert word in str(err.value)


def test_ints_are_accepted_for_floats():
    assert specs.resolve({"fraction": 1})["fraction"] == 1.0


@pytest.mark.parametrize("overrides, words", [
    ({"dataset": "adult", "method": "fedavg", "model": "neumf"}, ["model", "adult", "logreg"]),
    ({"dataset": "adult", "model": "logreg"}, ["method", "fedavg"]),
    ({"dataset": "adult", "method": "fedavg", "model": "logreg"}, ["natural", "tabular"]),
    ({"partitioner": "iid"}, ["num_clients", "iid"]),
    ({"partitioner": "single", "num_clients": 3}, ["single", "exactly 1"]),
    ({"partition.low": 0.9, "partition.high": 0.5}, ["partition.low", "partition.high"]),
])
def test_inconsistent_combinations_are_refused(overrides, words):
    with pytest.raises(specs.SpecError) as err:
        specs.resolve(overrides)
    for word in words:
        assert word in str(err.value)


def test_set_assignments_use_toml_values():
    parsed = specs.parse_set(["rounds=5", "fedncf.server_lr=1e-2", "dataset=filmtrust",
                              "cohort=false", 'out_dir="a b"'])
    assert parsed == {"rounds": 5, "fedncf.server_lr": 0.01, "dataset": "filmtrust",
                      "cohort": False, "out_dir": "a b"}
    with pytest.raises(specs.SpecError, match="key=value"):
        specs.parse_set(["rounds"])


def test_written_spec_reads_back_identically(tmp_path):
    spec = specs.resolve({"rounds": 7, "fedncf.server_lr": 0.005,
                          "data.protocol": "fedrecgel", "cohort": False})
    path = tmp_path / "spec.toml"
    path.write_text(specs.to_toml(spec))
    assert specs.resolve(specs.load_file(path)) == spec


def test_experiment_specs_are_valid():
    for path in sorted((ROOT / "experiments").rglob("*.toml")):
        specs.resolve(specs.load_file(path))


def test_missing_and_malformed_spec_files_are_named(tmp_path):
    with pytest.raises(specs.SpecError, match="does not exist"):
        specs.load_file(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("rounds = = 3")
    with pytest.raises(specs.SpecError, match="bad.toml is not valid TOML"):
        specs.load_file(bad)
