"""Attribute-inference audit of a finished recommendation run: attack its user embeddings.

    fedsim audit RUN_DIR [--attribute NAME ...] [--seeds N]

writes ``RUN_DIR/audit.json``: for each user attribute of the dataset (MovieLens-100K: gender,
age_30, age_group, occupation), the scores of the attacker of
:func:`fedsim.metrics.attribute_inference.attack` trained on the run's final user embeddings,
and for binary attributes the AUC of the attacker that orients itself on its shadow set
(``oriented_{probe}_auc``).

Where the embeddings come from:

- federated recommendation (fedncf, fedmf, fedrecgel): user embeddings are private. Each client
  keeps them in its node-local store (``state_dir/<run id>/<partition>/r*.safetensors``,
  :mod:`fedsim.app.private_store`) and they never reach the server. The audit reads every
  client's newest version (the backbone's user tables side by side: NeuMF's GMF and MLP
  embeddings), so it models an attacker who has obtained them (a compromised device or store,
  a leak), not the server of the run. Users whose client never trained have no state and are
  left out (counted in ``users_without_state``).
- centralized methods (fedsim/centralized): the user embeddings are part of the model. The audit
  loads the final model from the run's checkpoint and asks the method's Trainer for the users'
  embeddings as it releases them (:meth:`Trainer.user_embeddings`; RAID's include its noise
  baseline). Single-client runs only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedsim.app.client_app import state_root
from fedsim.app.private_store import PrivateStore
from fedsim.federation import load_federation
from fedsim.metrics.attribute_inference import PROBES, attack
from fedsim.models import backbone
from fedsim.methods import METHODS
from fedsim.methods.centralized import make_trainer
from fedsim.runner.checkpoint import load_checkpoint
from fedsim.spec import load_file, resolve

FILE = "audit.json"
TEST_FRACTION = 0.2
# The recommendation datasets with user attributes (fedsim/data: Interactions.user_attributes).
ATTRIBUTE_DATASETS = {"movielens-100k": "gender, age_30, age_group, occupation",
                      "synthetic-rec": "gender, age_group"}
THREAT_MODEL = {
    "federated": "user embeddings are private to the clients and never leave them; this audit "
                 "models an attacker who has obtained them (not what the server of the run sees)",
    "centralized": "the attacker sees the user embeddings the model releases (gray-box: not the "
                   "defence) and knows the attribute of 80% of the users",
}


def load_user_embeddings(run_dir: str | Path) -> tuple[dict[str, Any], np.ndarray, np.ndarray,
                                                       dict[str, Any]]:
    """(spec, user ids, embeddings [len(ids), d], where they came from) of a finished run."""
    run_dir = Path(run_dir)
    spec = run_spec(run_dir)
    if METHODS[spec["method"]].task != "recommendation":
        raise ValueError(f"method = {spec['method']!r} is not a recommendation method: it has "
                         "no user embeddings to audit")
    checkpoint = load_checkpoint(run_dir)
    federation = load_federation(spec)
    source = {"round": checkpoint["round"]}
    if METHODS[spec["method"]].trainer is not None:
        if federation.num_clients != 1:
            raise ValueError(f"{run_dir}: a centralized method with {federation.num_clients} "
                             "clients has no single set of user embeddings; audit single-client "
                             "runs")
        users = federation.train_parts[0]
        trainer = make_trainer(spec, federation.dataset, users)
        model = trainer.build_model()
        model.load_state_dict({k: torch.from_numpy(np.array(v.numpy()))
                               for k, v in checkpoint["arrays"].items()})
        return spec, users, trainer.user_embeddings(model), {**source, "kind": "centralized",
                                                               "from": "checkpoint"}
    tables = backbone(spec)[0].USER_TABLES
    users, rows, missing = [], [], 0
    for partition, part in enumerate(federation.train_parts):
        saved = PrivateStore(state_root(spec), checkpoint["run_id"], partition,
                             visible_round=checkpoint["round"], write_round=None).load()
        if saved is None:
            missing += len(part)
            continue
        users.append(part)
        rows.append(np.concatenate([saved[name] for name in tables], axis=1))
    if not users:
        raise FileNotFoundError(f"no client of {run_dir} left private state under "
                                f"{state_root(spec)} (run id {checkpoint['run_id']})")
    return spec, np.concatenate(users), np.concatenate(rows), {
        **source, "kind": "federated", "from": "private store", "users_without_state": missing}


def run_spec(run_dir: Path) -> dict[str, Any]:
    """The resolved spec of the run in `run_dir` (its config.toml)."""
    config = Path(run_dir) / "config.toml"
    if not config.is_file():
        raise FileNotFoundError(f"{config} does not exist: {run_dir} is not a fedsim run folder")
    return resolve({**load_file(config), "out_dir": str(Path(run_dir).resolve())})


def audit_run(run_dir: str | Path, attributes: list[str] | None = None,
              seeds: int = 5) -> dict[str, Any]:
    """Attack every requested attribute (default: all the dataset has); write audit.json."""
    ran = run_spec(Path(run_dir))
    if METHODS[ran["method"]].task == "recommendation" and ran["dataset"] not in ATTRIBUTE_DATASETS:
        raise ValueError(f"dataset {ran['dataset']!r} has no user attributes to attack; datasets "
                         "that have them: " + "; ".join(f"{name} ({names})" for name, names in
                                                        ATTRIBUTE_DATASETS.items()))
    spec, users, embeddings, source = load_user_embeddings(run_dir)
    known = load_federation(spec).dataset.user_attributes
    attributes = attributes or sorted(known)
    unknown = [name for name in attributes if name not in known]
    if not known or unknown:
        raise ValueError(f"attributes {unknown or attributes}: dataset {spec['dataset']!r} has "
                         f"user attributes {sorted(known) or 'none'}")
    report: dict[str, Any] = {
        "run_dir": str(run_dir), "method": spec["method"], "dataset": spec["dataset"],
        **source, "threat_model": THREAT_MODEL[source["kind"]], "users": int(len(users)),
        "embedding_dim": int(embeddings.shape[1]),
        "attacker": {"probes": list(PROBES), "seeds": seeds, "test_fraction": TEST_FRACTION},
        "attributes": {},
    }
    for name in attributes:
        labels = known[name][users]
        scores = {"class_counts": np.bincount(labels).tolist(),
                  **attack(embeddings, labels, seeds=seeds, test_fraction=TEST_FRACTION)}
        if len(scores["class_counts"]) == 2:  # also the attacker that orients itself
            oriented = attack(embeddings, labels, seeds=seeds, test_fraction=TEST_FRACTION,
                              oriented=True)
            scores.update({f"oriented_{probe}_auc": oriented[f"{probe}_auc"] for probe in PROBES})
        report["attributes"][name] = scores
    Path(run_dir, FILE).write_text(json.dumps(report, indent=2) + "\n")
    return report
