"""A method's descriptor: everything fedsim needs to know about one federated method, in one place.

Each module of the package :mod:`fedsim.methods` describes one method family next to nothing
else: its spec keys (``KEYS``, ``"<table>.<name>": Key``) and its methods (``METHODS``, a tuple
of :class:`Method`). The key table of fedsim/spec.py, its task, model and DP tables,
pyproject.toml's ``[tool.flwr.app.config]`` and docs/spec.md are all derived from them
(``python -m fedsim.spec --write``), so adding a method is a new module there plus the method's
own client and strategy files (docs/plugins.md, "Adding a method").

Descriptors stay free of torch and Flower: the spec is checked (``fedsim keys``, ``flwr run``'s
ServerApp before it loads data) without importing them, and clients, strategies and trainers
import fedsim.spec themselves. So a descriptor names its client (and a centralized method its
trainer) as ``"module:Class"``, and its strategy builder imports the strategy in its body.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from fedsim.keys import Key

TASKS = ("recommendation", "classification")
DP_UPLOAD_KINDS = ("update", "gradient")


@dataclass(frozen=True)
class Method:
    """One spec ``method``: what it solves, what it runs, and how its server side is built."""

    name: str
    task: str  # one of TASKS: the datasets and models it accepts
    # "module:Class" of the client (imported on first use; clients/ holds them).
    client: str
    # build(spec, federation, runtime) -> the strategy; runtime = {"run_id": str,
    # "on_round": callable or None}. Imports its strategy class in its body.
    build: Callable[[Mapping[str, Any], Any, dict[str, Any]], Any]
    # initial_arrays(spec, federation) -> the global model's first ArrayRecord.
    initial_arrays: Callable[[Mapping[str, Any], Any], Any]
    headline: str  # metric that selects the best round ("best_test"; "val_" + it for "best_val")
    # The models it runs with; () = any model of its task.
    models: tuple[str, ...] = ()
    # What client-side DP clips (fedsim/privacy/mechanism.py): "update" = the change of the
    # model weights, "gradient" = the uploaded gradient as it is; None = no DP support (the
    # method shares statistics that are not privatised).
    dp_upload: str | None = None
    # check(spec) raises SpecError for combinations of keys this method cannot run.
    check: Callable[[Mapping[str, Any]], None] | None = None
    # Centralized methods (fedsim/centralized): "module:Class" of their Trainer.
    trainer: str | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"method {self.name!r}: task {self.task!r}, expected one of {TASKS}")
        if self.dp_upload not in (None, *DP_UPLOAD_KINDS):
            raise ValueError(f"method {self.name!r}: dp_upload {self.dp_upload!r}, expected "
                             f"None or one of {DP_UPLOAD_KINDS}")

    def client_class(self) -> type:
        return _load(self.client)

    def trainer_class(self) -> type:
        if self.trainer is None:
            raise ValueError(f"method {self.name!r} is not a centralized method (no trainer)")
        return _load(self.trainer)


def _load(reference: str) -> Any:
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)


def discover(package: ModuleType) -> tuple[dict[str, Key], dict[str, Method]]:
    """The keys and methods declared by the modules of `package`, in module-name order; a key or
    method name declared twice is an error naming both modules."""
    keys: dict[str, Key] = {}
    methods: dict[str, Method] = {}
    owner: dict[str, str] = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        declared_methods = {method.name: method for method in getattr(module, "METHODS", ())}
        for kind, declared, table in (("key", getattr(module, "KEYS", {}), keys),
                                      ("method", declared_methods, methods)):
            for name, value in declared.items():
                if name in table:
                    raise ValueError(f"{kind} {name!r} is declared by both {owner[kind + name]} "
                                     f"and {module.__name__}")
                table[name] = value
                owner[kind + name] = module.__name__
    return keys, methods


def strategy_arguments(spec: Mapping[str, Any], federation: Any,
                       runtime: dict[str, Any]) -> dict[str, Any]:
    """Arguments every strategy takes (strategies/base.py). The clients get the spec and the run
    id (which names their private-state store) in every message; with DP on, the clients noise
    their uploads (fedsim/app/client_app.py) and the strategy accounts the budget."""
    from fedsim.privacy import ClientAccountant
    from fedsim.protocol import RUN_ID, SPEC, nodes_for

    return {"num_partitions": federation.num_clients,
            "num_nodes": nodes_for(spec, federation.num_clients),
            "fraction_train": spec["fraction"],
            "seed": spec["seed"], "evaluate_every": spec["eval_every"],
            "round_timeout": spec["round_timeout"], "min_replies": spec["min_replies"],
            "max_reply_bytes": int(spec["max_reply_mb"] * 2**20),
            "message_config": {SPEC: json.dumps(dict(spec)), RUN_ID: runtime["run_id"]},
            "on_round": runtime.get("on_round"),
            "accountant": ClientAccountant.from_spec(spec, federation.num_clients),
            "node_sums": spec["node_sums"]}


def classifier_arrays(spec: Mapping[str, Any], federation: Any) -> Any:
    """The first global weights of a tabular classifier (spec `model`, seeded by `seed`)."""
    import torch
    from flwr.app import ArrayRecord

    from fedsim.models import make_classifier

    torch.manual_seed(spec["seed"])
    data = federation.dataset
    return ArrayRecord(make_classifier(spec["model"], data.num_features, data.num_classes,
                                       spec["mlp.hidden"]).state_dict())


def recommender_arrays(spec: Mapping[str, Any], federation: Any) -> Any:
    """The first global weights of a recommender backbone (spec `model`): the shared tables."""
    from fedsim.models import backbone
    from strategies.fedncf import FedNCF

    model, sizes = backbone(spec)
    return FedNCF.initial_arrays(federation.dataset.num_items, spec["seed"], model, **sizes)
