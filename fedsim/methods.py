"""The method registry: for each spec `method`, its client, its strategy and its headline metric.

Adding a method = a client class in clients/, a strategy in strategies/, and one entry here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Mapping

from flwr.app import ArrayRecord

from clients.fedavg import FedAvgClient
from clients.fedncf import FedNCFClient
from fedsim.federation import Federation
from fedsim.models import make_classifier
from fedsim.protocol import node_count
from strategies.base import PartitionedStrategy
from strategies.fedavg import FedAvg
from strategies.fedncf import FedNCF


@dataclass(frozen=True)
class Method:
    client: type
    build: Callable[[Mapping[str, Any], Federation, Callable | None], PartitionedStrategy]
    initial_arrays: Callable[[Mapping[str, Any], Federation], ArrayRecord]
    headline: str  # metric that selects the best round ("best_test"; "val_" + it for "best_val")


def _common(spec: Mapping[str, Any], federation: Federation, on_round) -> dict[str, Any]:
    return {"num_partitions": federation.num_clients,
            "num_nodes": node_count(spec["nodes"], federation.num_clients),
            "fraction_train": spec["fraction"],
            "seed": spec["seed"], "evaluate_every": spec["eval_every"],
            "message_config": {"spec": json.dumps(dict(spec))}, "on_round": on_round}


def _classifier_arrays(spec: Mapping[str, Any], federation: Federation) -> ArrayRecord:
    import torch

    torch.manual_seed(spec["seed"])
    data = federation.dataset
    return ArrayRecord(make_classifier(spec["model"], data.num_features, data.num_classes,
                                       spec["mlp.hidden"]).state_dict())


METHODS: dict[str, Method] = {
    "fedavg": Method(
        client=FedAvgClient,
        build=lambda spec, fed, on_round: FedAvg(**_common(spec, fed, on_round)),
        initial_arrays=_classifier_arrays,
        headline="accuracy",
    ),
    "fedncf": Method(
        client=FedNCFClient,
        build=lambda spec, fed, on_round: FedNCF(server_lr=spec["fedncf.server_lr"],
                                                 **_common(spec, fed, on_round)),
        initial_arrays=lambda spec, fed: FedNCF.initial_arrays(
            fed.dataset.num_items, spec["neumf.factor_dim"], spec["neumf.mlp_layers"],
            spec["seed"]),
        headline="hr@10",
    ),
}
