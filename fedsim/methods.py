"""The method registry: for each spec `method`, its client, its strategy and its headline metric.

Adding a method = a client class in clients/, a strategy in strategies/, and one entry here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Mapping

from flwr.app import ArrayRecord

from clients.centralized import CentralizedClient
from clients.fairfed import FairFedClient
from clients.fedavg import FedAvgClient
from clients.fedfact import FedFACTPostClient
from clients.fedfact_in import FedFACTInClient
from clients.fedfb import FedFBClient
from clients.fedncf import FedNCFClient
from clients.fedrecgel import FedRecGELClient
from fedsim.centralized.registry import TRAINERS, make_trainer
from fedsim.federation import Federation
from fedsim.models import backbone, make_classifier
from fedsim.privacy import ClientAccountant
from fedsim.protocol import nodes_for
from strategies.base import PartitionedStrategy
from strategies.centralized import LocalTrainingFedAvg
from strategies.fairfed import FairFed
from strategies.fedavg import FedAvg
from strategies.fedfact import FedFACTPost
from strategies.fedfact_in import FedFACTIn
from strategies.fedfb import FedFB
from strategies.fedncf import FedNCF
from strategies.fedrecgel import FedRecGEL


@dataclass(frozen=True)
class Method:
    client: type
    # build(spec, federation, runtime): runtime = {"run_id": str, "on_round": callable or None}
    build: Callable[[Mapping[str, Any], Federation, dict[str, Any]], PartitionedStrategy]
    initial_arrays: Callable[[Mapping[str, Any], Federation], ArrayRecord]
    headline: str  # metric that selects the best round ("best_test"; "val_" + it for "best_val")


def _common(spec: Mapping[str, Any], federation: Federation,
            runtime: dict[str, Any]) -> dict[str, Any]:
    """Arguments every strategy takes. The clients get the spec and the run id (which names
    their private-state store) in every message; with DP on, the clients noise their uploads
    (fedsim/app/client_app.py) and the strategy accounts the budget."""
    return {"num_partitions": federation.num_clients,
            "num_nodes": nodes_for(spec, federation.num_clients),
            "fraction_train": spec["fraction"],
            "seed": spec["seed"], "evaluate_every": spec["eval_every"],
            "round_timeout": spec["round_timeout"], "min_replies": spec["min_replies"],
            "max_reply_bytes": int(spec["max_reply_mb"] * 2**20),
            "message_config": {"spec": json.dumps(dict(spec)), "run-id": runtime["run_id"]},
            "on_round": runtime.get("on_round"),
            "accountant": ClientAccountant.from_spec(spec, federation.num_clients),
            "node_sums": spec["node_sums"]}


def _fedfact(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Arguments of both FedFACT strategies."""
    return {name: spec[f"fedfact.{name}"] for name in ("variant", "criterion", "dual_lr", "bound")}


def _classifier_arrays(spec: Mapping[str, Any], federation: Federation) -> ArrayRecord:
    import torch

    torch.manual_seed(spec["seed"])
    data = federation.dataset
    return ArrayRecord(make_classifier(spec["model"], data.num_features, data.num_classes,
                                       spec["mlp.hidden"]).state_dict())


def _recommender_arrays(spec: Mapping[str, Any], federation: Federation) -> ArrayRecord:
    model, sizes = backbone(spec)
    return FedNCF.initial_arrays(federation.dataset.num_items, spec["seed"], model, **sizes)


def _centralized_arrays(spec: Mapping[str, Any], federation: Federation) -> ArrayRecord:
    import torch

    torch.manual_seed(spec["seed"])
    trainer = make_trainer(spec, federation.dataset, federation.train_parts[0])
    return ArrayRecord(trainer.build_model().state_dict())


def _fedsgd(spec: Mapping[str, Any], federation: Federation,
            runtime: dict[str, Any]) -> dict[str, Any]:
    """Arguments of the FedSGD + server Adam strategies (FedNCF, FedMF, FedRecGEL)."""
    return {"server_lr": spec["fedncf.server_lr"], "item_tables": backbone(spec)[0].ITEM_TABLES,
            "dense_rows": spec["privacy.clip_norm"] > 0, **_common(spec, federation, runtime)}


# FedNCF and FedMF: one client and one server, the backbone named by the spec's `model`.
_FEDSGD = Method(
    client=FedNCFClient,
    build=lambda spec, fed, runtime: FedNCF(**_fedsgd(spec, fed, runtime)),
    initial_arrays=_recommender_arrays,
    headline="hr@10",
)

METHODS: dict[str, Method] = {
    "fedavg": Method(
        client=FedAvgClient,
        build=lambda spec, fed, runtime: FedAvg(**_common(spec, fed, runtime)),
        initial_arrays=_classifier_arrays,
        headline="accuracy",
    ),
    "fedncf": _FEDSGD,
    # FedNCF's client and server on the MF backbone (the spec must say model = "mf").
    "fedmf": _FEDSGD,
    "fedrecgel": Method(
        client=FedRecGELClient,
        build=lambda spec, fed, runtime: FedRecGEL(
            item_centric=spec["fedrecgel.item_centric"], eisam=spec["fedrecgel.eisam"],
            eisam_alpha=spec["eisam.alpha"], eisam_beta_max=spec["eisam.beta_max"],
            **_fedsgd(spec, fed, runtime)),
        initial_arrays=_recommender_arrays,
        headline="hr@10",
    ),
    "fedfact_post": Method(
        client=FedFACTPostClient,
        build=lambda spec, fed, runtime: FedFACTPost(
            pretrain_rounds=spec["fedfact.pretrain_rounds"],
            dual_step=spec["fedfact.dual_step"], **_fedfact(spec),
            **_common(spec, fed, runtime)),
        initial_arrays=_classifier_arrays,
        headline="accuracy",
    ),
    "fedfact_in": Method(
        client=FedFACTInClient,
        build=lambda spec, fed, runtime: FedFACTIn(
            xi_global=spec["fedfact.xi_global"], **_fedfact(spec),
            **_common(spec, fed, runtime)),
        initial_arrays=_classifier_arrays,
        headline="accuracy",
    ),
    "fairfed": Method(
        client=FairFedClient,
        build=lambda spec, fed, runtime: FairFed(
            beta=spec["fairfed.beta"], criterion=spec["fairfed.criterion"],
            **_common(spec, fed, runtime)),
        initial_arrays=_classifier_arrays,
        headline="accuracy",
    ),
    "fedfb": Method(
        client=FedFBClient,
        build=lambda spec, fed, runtime: FedFB(step=spec["fedfb.step"],
                                               **_common(spec, fed, runtime)),
        initial_arrays=_classifier_arrays,
        headline="accuracy",
    ),
}

# The centralized methods (fedsim/centralized): one Trainer each, one client and one server.
_CENTRALIZED = Method(
    client=CentralizedClient,
    build=lambda spec, fed, runtime: LocalTrainingFedAvg(**_common(spec, fed, runtime)),
    initial_arrays=_centralized_arrays,
    headline="ndcg@10_full",
)
METHODS.update({name: _CENTRALIZED for name in TRAINERS})
