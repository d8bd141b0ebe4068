"""The method descriptors (fedsim/method.py, fedsim/methods/): one place per method, from which the
spec's tables are derived."""

from __future__ import annotations

import importlib
import sys
import textwrap

import pytest

from fedsim import spec as specs
from fedsim.federation import load_federation
from fedsim.keys import Key
from fedsim.method import Method, discover
from fedsim.methods import KEYS, METHODS
from strategies.base import PartitionedStrategy

# A spec each method runs with (the smallest data of its task).
DATA = {"recommendation": {"dataset": "synthetic-rec", "data.synthetic_users": 30},
        "classification": {"dataset": "synthetic-tabular", "model": "logreg", "partitioner": "iid",
                           "num_clients": 3}}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_descriptor_builds_its_client_and_strategy(name):
    method = METHODS[name]
    spec = specs.resolve({"method": name, **DATA[method.task],
                          **({"model": method.models[0]} if method.models else {}),
                          **({"partitioner": "single"} if method.trainer else {})})
    federation = load_federation(spec)
    strategy = method.build(spec, federation, {"run_id": "t"})
    assert isinstance(strategy, PartitionedStrategy)
    assert strategy.num_partitions == federation.num_clients
    client = method.client_class()(spec, 0)
    assert client is not None
    assert len(method.initial_arrays(spec, federation)) > 0
    if method.trainer:
        assert method.trainer_class().__name__.endswith("Trainer")


def test_the_spec_tables_are_the_descriptors():
    assert specs.SCHEMA["method"].choices == tuple(METHODS)
    for name, key in KEYS.items():
        assert specs.SCHEMA[name] is key
    # Every key of a method table is declared by a descriptor, none in fedsim/spec.py.
    method_tables = {name.partition(".")[0] for name in KEYS}
    core = [name for name in specs.SCHEMA if name not in KEYS]
    assert not [name for name in core if name.partition(".")[0] in method_tables]


def test_a_descriptor_rule_is_checked():
    with pytest.raises(specs.SpecError, match="fedrecgel.item_centric"):
        specs.resolve({"method": "fedrecgel", "fedrecgel.item_centric": True,
                       "privacy.clip_norm": 1.0})
    with pytest.raises(specs.SpecError, match="does not support differential privacy"):
        specs.resolve({"method": "fedfact_post", "dataset": "adult", "model": "logreg",
                       "partitioner": "iid", "num_clients": 2, "privacy.clip_norm": 1.0})
    with pytest.raises(specs.SpecError, match="expected 'neumf'"):
        specs.resolve({"method": "fedncf", "model": "mf"})


def _package(tmp_path, name, modules):
    root = tmp_path / name
    root.mkdir()
    (root / "__init__.py").write_text("")
    for module, text in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(text))
    sys.path.insert(0, str(tmp_path))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(tmp_path))


METHOD_MODULE = """
    from fedsim.keys import Key
    from fedsim.method import Method

    KEYS = {"toy.step": Key(0.5, "Toy: a step.", low=0.0)}
    METHODS = (Method(name="toy", task="recommendation", client="clients.fedncf:FedNCFClient",
                      build=None, initial_arrays=None, headline="hr@10"),)
"""


def test_a_new_module_is_a_new_method_and_a_name_declared_twice_is_an_error(tmp_path):
    keys, methods = discover(_package(tmp_path, "toy_methods", {"toy": METHOD_MODULE}))
    assert list(methods) == ["toy"] and methods["toy"].client_class().__name__ == "FedNCFClient"
    assert keys["toy.step"].default == 0.5
    twice = _package(tmp_path, "twice_methods", {"a": METHOD_MODULE, "b": METHOD_MODULE})
    with pytest.raises(ValueError, match="declared by both twice_methods.a and twice_methods.b"):
        discover(twice)


def test_a_descriptor_with_an_unknown_task_or_dp_kind_is_refused():
    with pytest.raises(ValueError, match="task 'ranking'"):
        Method(name="x", task="ranking", client="m:C", build=None, initial_arrays=None,
               headline="hr@10")
    with pytest.raises(ValueError, match="dp_upload 'weights'"):
        Method(name="x", task="classification", client="m:C", build=None,
               initial_arrays=None, headline="accuracy", dp_upload="weights")
    assert isinstance(KEYS["fedncf.server_lr"], Key)
