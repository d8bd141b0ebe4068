"""Strategies end to end on the in-process FakeGrid: determinism, sparsity, privacy, failures."""

import json
import tempfile

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord, MessageType

from clients.fedncf import FedNCFClient
from fedsim.app.client_app import app as client_app
from fedsim.federation import load_federation
from fedsim.methods import METHODS
from fedsim.protocol import unpack_arrays
from fedsim.spec import resolve
from strategies.fedavg import FedAvg
from strategies.fedncf import mean_sparse_gradient
from tests.fake_grid import FakeGrid
from tests.helpers import fail_training, private_arrays, run_fake

REC = {"dataset": "synthetic-rec", "rounds": 2, "fraction": 0.05, "eval_every": 2}
TAB = {"dataset": "synthetic-tabular", "method": "fedavg", "model": "logreg",
       "partitioner": "dirichlet", "num_clients": 4, "fraction": 1.0, "rounds": 3,
       "fedavg.lr": 0.1, "fedavg.local_epochs": 3}


@pytest.mark.slow
def test_many_clients_per_node_give_the_same_run_as_one_client_per_node():
    # One client at a time (cohort = false) with per-client replies (node_sums = false) is
    # bit-reproducible across node layouts; cohort mode and node sums agree to float tolerance
    # (tests/test_cohort.py, tests/test_node_sums.py).
    cohort, cohort_history, _ = run_fake({**REC, "nodes": 3, "cohort": False, "node_sums": False})
    single, single_history, _ = run_fake({**REC, "nodes": 0, "node_sums": False})
    assert cohort.num_nodes == 3 and single.num_nodes == 500
    for name, value in cohort.params.items():
        assert torch.equal(value, single.params[name]), name
    # The physical bytes (what the simulation moved) depend on the layout; nothing else does.
    strip = lambda h: [{k: v for k, v in r.items()
                        if not k.endswith("_seconds") and not k.startswith("physical_")}
                       for r in h]
    assert strip(cohort_history) == strip(single_history)


def test_same_seed_same_run_and_other_seed_other_run():
    first, _, _ = run_fake({**REC, "rounds": 1})
    again, _, _ = run_fake({**REC, "rounds": 1})
    other, _, _ = run_fake({**REC, "rounds": 1, "seed": 1})
    assert all(torch.equal(first.params[k], again.params[k]) for k in first.params)
    assert not torch.equal(first.params["item_gmf.weight"], other.params["item_gmf.weight"])


def test_sampling_is_seeded_by_round_and_sized_by_fraction():
    strategy = FedAvg(num_partitions=1227, fraction_train=0.1, seed=3)
    assert len(strategy.sample(1)) == 122
    assert strategy.sample(1) == strategy.sample(1)
    assert strategy.sample(1) != strategy.sample(2)
    assert strategy.sample(1) != FedAvg(num_partitions=1227, fraction_train=0.1).sample(1)
    assert len(FedAvg(num_partitions=5, fraction_train=0.01).sample(1)) == 1


def test_item_sparse_mean_equals_dense_mean_with_zero_rows():
    rng = np.random.default_rng(0)
    params = {"item_gmf.weight": torch.zeros(20, 3), "item_mlp.weight": torch.zeros(20, 4),
              "head.weight": torch.zeros(1, 7)}
    uploads, dense = [], []
    for _ in range(3):
        ids = np.sort(rng.choice(20, size=6, replace=False))
        upload = {"item_ids": ids, "head.weight": rng.normal(size=(1, 7)).astype(np.float32)}
        full = {"head.weight": upload["head.weight"]}
        for name, width in (("item_gmf.weight", 3), ("item_mlp.weight", 4)):
            upload[name] = rng.normal(size=(6, width)).astype(np.float32)
            full[name] = np.zeros((20, width), np.float32)
            full[name][ids] = upload[name]
        uploads.append(upload)
        dense.append(full)
    mean = mean_sparse_gradient(params, uploads, ("item_gmf.weight", "item_mlp.weight"))
    for name in params:
        expected = np.mean([d[name] for d in dense], axis=0)
        np.testing.assert_allclose(mean[name].numpy(), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_clients_receive_only_the_item_rows_they_asked_for():
    _, _, grid = run_fake({**REC, "rounds": 1, "nodes": 0})
    spec_overrides = {**REC, "rounds": 1, "nodes": 0}
    spec = resolve(spec_overrides)
    train = [m for m in grid.sent if m.metadata.message_type == "train"]
    assert len(train) == 25  # 5% of 500 clients, one node each
    for message in train:
        partition = message.content.config_records["config"]["partition-ids"][0]
        own = unpack_arrays(message.content.array_records["client-arrays"])[partition]
        wanted = FedNCFClient(spec, partition).needed_items(1)
        np.testing.assert_array_equal(own["item_ids"], wanted)
        assert own["item_gmf.weight"].shape == (len(wanted), 32)


def test_no_reply_carries_user_embeddings():
    strategy, _, grid = run_fake({**REC, "nodes": 4})
    private = [arrays[name] for arrays in private_arrays(strategy).values()
               for name in ("user_gmf.weight", "user_mlp.weight")]
    assert private, "the clients kept no private state"
    for reply in grid.replies:
        for record in reply.content.array_records.values():
            for name, array in record.items():
                assert "user_" not in name and "private" not in name, name
                values = array.numpy()
                assert not any(values.shape == p.shape and np.array_equal(values, p)
                               for p in private), name


@pytest.mark.slow
def test_fedncf_learns_on_synthetic_data():
    _, history, _ = run_fake({**REC, "rounds": 6, "fraction": 0.2, "eval_every": 6})
    assert history[0]["round"] == 0 and history[-1]["round"] == 6
    assert history[-1]["hr@10"] > history[0]["hr@10"] + 0.1
    # Training messages carry only the touched item rows; evaluation sends every client the full
    # model, so per round the training traffic is far below the evaluation traffic.
    assert 0 < history[-1]["bytes_up"] < history[-1]["bytes_eval_down"]
    assert 0 < history[-1]["bytes_down"] < history[-1]["bytes_eval_down"]


def test_bytes_count_the_array_values_each_client_gets_and_sends():
    strategy, history, grid = run_fake({**REC, "rounds": 1, "nodes": 4})
    spec = json.loads(strategy.message_config["spec"])
    shared = sum(p.numel() * 4 for k, p in strategy.params.items() if not k.startswith("item_"))
    down = up = 0
    for p in strategy.sample(1):
        rows = len(FedNCFClient(spec, p).needed_items(1))
        row_bytes = rows * 8 + rows * (32 + 128) * 4  # item_ids (int64), the two item tables
        down += shared + row_bytes  # the dense layers reach each client, then its rows
        up += rows * 8 + shared + row_bytes  # the row request, then the upload (ids, gradients)
    assert (history[1]["bytes_down"], history[1]["bytes_up"]) == (down, up)


def test_fedavg_reports_accuracy_and_fairness_gaps():
    _, history, _ = run_fake(TAB)
    final = history[-1]
    # Round 0 predicts the majority class; sklearn's centralized logistic regression reaches 0.73.
    assert final["accuracy"] > history[0]["accuracy"] + 0.02
    assert final["accuracy"] > 0.7
    for key in ("dp_global", "dp_local_max", "dp_local_mean", "eo_global", "eop_pop_global"):
        assert 0.0 <= final[key] <= 1.0, key
    # The synthetic set has a group-dependent label rate, so a plain model shows a DP gap.
    assert final["dp_global"] > 0.05


def test_a_failing_client_is_counted_and_the_round_goes_on(monkeypatch):
    from clients.fedavg import FedAvgClient

    fail_training(monkeypatch, FedAvgClient, 1)
    _, history, _ = run_fake({**TAB, "nodes": 2})
    assert [r["failures"] for r in history] == [0, 1, 1, 1]
    assert history[-1]["accuracy"] > 0.7


def test_start_sends_flowers_train_and_evaluate_config_to_the_clients():
    """Flower's Strategy.start(train_config=..., evaluate_config=...) reaches the clients, as
    Flower's own strategies send it: in each training / evaluation message's config, never
    over fedsim's addressing keys."""
    spec = resolve({**TAB, "rounds": 1, "out_dir": tempfile.mkdtemp(prefix="fedsim-test-")})
    federation = load_federation(spec)
    strategy = METHODS["fedavg"].build(spec, federation, {"run_id": "cfg"})
    grid = FakeGrid(client_app, strategy.num_nodes)
    strategy.start(grid, METHODS["fedavg"].initial_arrays(spec, federation), num_rounds=1,
                   train_config=ConfigRecord({"lr-note": 0.5, "server-round": 99}),
                   evaluate_config=ConfigRecord({"eval-note": "x"}))
    configs = {kind: [m.content.config_records["config"] for m in grid.sent
                      if m.metadata.message_type == kind]
               for kind in (MessageType.TRAIN, MessageType.EVALUATE)}
    assert configs[MessageType.TRAIN] and configs[MessageType.EVALUATE]
    assert all(c["lr-note"] == 0.5 and c["server-round"] == 1 and "eval-note" not in c
               for c in configs[MessageType.TRAIN])
    assert all(c["eval-note"] == "x" and "lr-note" not in c
               for c in configs[MessageType.EVALUATE])
