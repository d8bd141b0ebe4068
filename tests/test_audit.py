"""`fedsim audit RUN_DIR` on a federated run: the attacker reads the clients' private user
embeddings from their store and writes audit.json."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedsim.app.client_app import app as client_app
from fedsim.app.private_store import SUFFIX, read_version
from fedsim.audit import load_user_embeddings
from fedsim.cli import main
from fedsim.federation import load_federation
from fedsim.runner.experiment import run_on_grid
from fedsim.spec import resolve
from tests.fake_grid import FakeGrid

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# 20 clients of 25 users, all training in both rounds.
FEDNCF = {"method": "fedncf", "dataset": "synthetic-rec", "partition.ids_per_client": 25,
          "fraction": 1.0, "nodes": 2, "rounds": 2, "eval_every": 2}


@pytest.mark.slow
def test_audit_of_a_fedncf_run_reads_the_private_store(tmp_path, capsys):
    out = tmp_path / "fedncf"
    run_on_grid(FakeGrid(client_app, 2), resolve(FEDNCF), out)
    _, users, embeddings, source = load_user_embeddings(out)
    assert source["from"] == "private store" and source["users_without_state"] == 0
    assert sorted(users.tolist()) == list(range(500))
    # NeuMF's user tables side by side: GMF (32) and MLP (32 * 2**2) embeddings.
    assert embeddings.shape == (500, 32 + 128)
    first_of_client_3 = load_federation(resolve(FEDNCF)).train_parts[3][0]
    saved = read_version(sorted((out / "client_state").glob(f"*/3/r*{SUFFIX}"))[-1])
    assert np.array_equal(embeddings[users == first_of_client_3][0, :32],
                          saved["user_gmf.weight"][0])

    assert main(["audit", str(out), "--seeds", "1"]) == 0
    report = json.loads((out / "audit.json").read_text())
    assert "fedsim audit" not in capsys.readouterr().err
    assert report["method"] == "fedncf" and report["round"] == 2 and report["users"] == 500
    assert "obtained" in report["threat_model"]
    assert set(report["attributes"]) == {"gender", "age_group"}
    gender = report["attributes"]["gender"]
    assert sum(gender["class_counts"]) == 500
    assert 0.0 <= gender["mlp_auc"] <= 1.0 and 0.0 <= gender["logreg_bacc"] <= 1.0
    assert "oriented_mlp_auc" in gender  # binary attributes only
    assert "oriented_mlp_auc" not in report["attributes"]["age_group"]


def test_audit_names_what_is_missing(tmp_path, capsys):
    assert main(["audit", str(tmp_path)]) == 2
    assert "not a fedsim run folder" in capsys.readouterr().err
