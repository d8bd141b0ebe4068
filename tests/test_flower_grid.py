"""Flower's own strategies on fedsim's logical clients, through fedsim.logical_grid.LogicalGrid.

20 logical clients on 3 physical nodes (tests/fake_grid.py running fedsim's ClientApp). Flower's
strategies sample virtual node ids themselves (``random.sample``, seeded here); each test reads
the clients they sampled from the messages they produced (virtual id - VIRTUAL_ID_BASE, the
documented mapping), and the reference computation uses exactly those clients.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, FedAdam
from flwr.serverapp.strategy import FedAvg as FlowerFedAvg

from clients.fedavg import FedAvgClient
from fedsim.app.client_app import app as client_app
from fedsim.federation import load_federation
from fedsim.logical_grid import VIRTUAL_ID_BASE, LogicalGrid
from fedsim.models import make_classifier
from fedsim.spec import resolve
from strategies.fedavg import FedAvg
from tests.fake_grid import FakeGrid
from tests.helpers import fail_training

CLIENTS, NODES = 20, 3
SPEC = {"dataset": "synthetic-tabular", "method": "fedavg", "model": "logreg",
        "partitioner": "dirichlet", "num_clients": CLIENTS, "nodes": NODES, "fraction": 0.5,
        "fedavg.lr": 0.1, "fedavg.local_epochs": 1}


@pytest.fixture
def setup(tmp_path):
    """(spec, message_config, initial arrays) of SPEC, the clients' state in tmp_path."""
    spec = resolve({**SPEC, "out_dir": str(tmp_path)})
    data = load_federation(spec).dataset
    torch.manual_seed(spec["seed"])
    model = make_classifier(spec["model"], data.num_features, data.num_classes,
                            spec["mlp.hidden"])
    return spec, {"spec": json.dumps(dict(spec)), "run-id": "flower"}, ArrayRecord(
        model.state_dict())


def logical_grid(message_config: dict) -> LogicalGrid:
    return LogicalGrid(FakeGrid(client_app, NODES), num_partitions=CLIENTS, num_nodes=NODES,
                       message_config=message_config)


def record_training_clients(strategy) -> dict[int, list[int]]:
    """round -> partitions the (otherwise untouched) Flower strategy chose to train."""
    sampled: dict[int, list[int]] = {}
    configure = strategy.configure_train

    def configure_train(server_round, arrays, config, grid):
        messages = list(configure(server_round, arrays, config, grid))
        sampled[server_round] = sorted(m.metadata.dst_node_id - VIRTUAL_ID_BASE
                                       for m in messages)
        return messages

    strategy.configure_train = configure_train
    return sampled


def arrays_per_round(rounds: dict[int, ArrayRecord]):
    """An evaluate_fn keeping the global arrays after every round (Flower calls it with them)."""
    def keep(server_round: int, arrays: ArrayRecord):
        rounds[server_round] = {k: v.numpy() for k, v in arrays.items()}
    return keep


@pytest.mark.slow
def test_flowers_fedavg_on_logical_clients_equals_fedsims_fedavg(setup):
    spec, message_config, initial = setup
    random.seed(0)  # Flower's FedAvg samples with the module-level random
    flower = FlowerFedAvg(fraction_train=0.5)
    sampled = record_training_clients(flower)
    grid = logical_grid(message_config)
    result = flower.start(grid, initial, num_rounds=3)
    assert [len(s) for s in sampled.values()] == [10, 10, 10] and sampled[1] != sampled[2]

    # fedsim's FedAvg (node sums on: one partial sum per node) on the clients Flower sampled.
    reference = FedAvg(num_partitions=CLIENTS, num_nodes=NODES, fraction_train=0.5,
                       seed=spec["seed"], evaluate_every=3, message_config=message_config)
    reference.sample = sampled.__getitem__
    expected = reference.start(FakeGrid(client_app, NODES), initial, num_rounds=3)
    for name, value in expected.arrays.items():
        np.testing.assert_allclose(result.arrays[name].numpy(), value.numpy(),
                                   rtol=1e-5, atol=1e-6, err_msg=name)
        assert not np.allclose(value.numpy(), initial[name].numpy()), name  # it trained

    # Packed: one training message per physical node and round, addressed to its sampled clients.
    train = [m for m in grid.grid.sent if m.metadata.message_type == MessageType.TRAIN]
    assert len(train) == 3 * NODES
    for server_round, partitions in sampled.items():
        addressed = [p for m in train if m.content["config"]["server-round"] == server_round
                     for p in m.content["config"]["partition-ids"]]
        assert sorted(addressed) == partitions
    # Flower's federated evaluation ran on every client through the adapter too.
    assert set(result.evaluate_metrics_clientapp) == {1, 2, 3}
    assert grid.failures == {}


def test_flowers_fedadam_takes_its_adaptive_server_step_on_the_clients_mean(setup):
    spec, message_config, initial = setup
    random.seed(1)
    adam = FedAdam(fraction_train=0.5, fraction_evaluate=0.0, eta=0.05, beta_1=0.9,
                   beta_2=0.99, tau=1e-3)
    sampled = record_training_clients(adam)
    rounds: dict[int, dict[str, np.ndarray]] = {}
    adam.start(logical_grid(message_config), initial, num_rounds=2,
               evaluate_fn=arrays_per_round(rounds))

    # FedAdam (Reddi et al. 2021, as Flower writes it) on the example-weighted mean of the
    # sampled clients' models, each trained here directly by fedsim's client code.
    m = v = None
    for server_round in (1, 2):
        x = rounds[server_round - 1]
        uploads = [FedAvgClient(spec, p).train(x, {}, None, server_round)
                   for p in sampled[server_round]]
        weights = np.array([metrics["num-examples"] for _, metrics in uploads], float)
        weights /= weights.sum()
        mean = {k: sum(w * u[k] for w, (u, _) in zip(weights, uploads)) for k in x}
        delta = {k: mean[k] - x[k] for k in x}
        m = {k: 0.9 * (m[k] if m else 0) + 0.1 * delta[k] for k in x}
        v = {k: 0.99 * (v[k] if v else 0) + 0.01 * delta[k] ** 2 for k in x}
        eta = 0.05 * np.sqrt(1 - 0.99 ** (server_round + 1)) / (1 - 0.9 ** (server_round + 1))
        for k in x:
            step = eta * m[k] / (np.sqrt(v[k]) + 1e-3)
            np.testing.assert_allclose(rounds[server_round][k], x[k] + step, rtol=1e-4,
                                       atol=1e-6, err_msg=f"round {server_round} {k}")
            # An adaptive step, not the mean FedAvg would take.
            assert not np.allclose(rounds[server_round][k], mean[k], atol=1e-3), k


def test_failed_clients_come_back_as_error_replies_and_are_counted(setup, monkeypatch):
    _, message_config, initial = setup
    fail_training(monkeypatch, FedAvgClient, 4)
    grid = logical_grid(message_config)
    content = RecordDict({"arrays": initial, "config": ConfigRecord({"server-round": 1})})
    instructions = [Message(content, dst_node_id=node, message_type=MessageType.TRAIN)
                    for node in grid.get_node_ids()[:6]]
    replies = grid.send_and_receive(instructions, timeout=60)
    by_client = {r.metadata.src_node_id - VIRTUAL_ID_BASE: r for r in replies}
    assert sorted(by_client) == [0, 1, 2, 3, 4, 5]
    assert by_client[4].has_error() and "injected failure" in by_client[4].error.reason
    assert not any(by_client[p].has_error() for p in (0, 1, 2, 3, 5))
    assert by_client[0].content["metrics"]["num-examples"] > 0
    assert grid.failures == {MessageType.TRAIN: 1} and list(grid.last_errors) == [4]

    # Traffic: the model reaches each of the 6 clients (logically) in 3 node messages.
    model_bytes = sum(a.numpy().nbytes for a in initial.values())
    assert grid.bytes["down"] == 6 * model_bytes
    assert grid.physical_bytes["down"] == NODES * model_bytes
    assert grid.bytes["up"] == 5 * model_bytes  # the failed client uploaded nothing


def test_what_fedsim_clients_cannot_answer_is_refused_naming_it(setup):
    _, message_config, initial = setup
    grid = logical_grid(message_config)
    first = grid.get_node_ids()[0]
    stray = Message(RecordDict({"config": ConfigRecord({"server-round": 1})}),
                    dst_node_id=1000, message_type=MessageType.TRAIN)
    with pytest.raises(ValueError, match="node 1000 is not a virtual node"):
        grid.send_and_receive([stray])
    roundless = Message(RecordDict({"arrays": initial, "config": ConfigRecord({"lr": 0.1})}),
                        dst_node_id=first, message_type=MessageType.TRAIN)
    with pytest.raises(ValueError, match="no 'server-round'"):
        grid.send_and_receive([roundless])
    too_many = LogicalGrid(FakeGrid(client_app, NODES), num_partitions=CLIENTS + 2,
                           num_nodes=NODES, message_config=message_config)
    with pytest.raises(RuntimeError, match=r"no node hosts partitions \[20, 21\]"):
        too_many.get_node_ids()


def test_flowers_server_side_dp_wrapper_clips_each_clients_update(setup):
    _, message_config, initial = setup

    def update_norm(strategy) -> float:
        random.seed(2)  # the same 10 clients for both strategies
        result = strategy.start(logical_grid(message_config), initial, num_rounds=1)
        return float(np.sqrt(sum(((result.arrays[k].numpy() - initial[k].numpy()) ** 2).sum()
                                 for k in initial)))

    plain = update_norm(FlowerFedAvg(fraction_train=0.5, fraction_evaluate=0.0))
    clipped = update_norm(DifferentialPrivacyServerSideFixedClipping(
        FlowerFedAvg(fraction_train=0.5, fraction_evaluate=0.0), noise_multiplier=0.0,
        clipping_norm=0.01, num_sampled_clients=10))
    # Without noise the mean of updates clipped to norm 0.01 has norm at most 0.01.
    assert plain > 0.1 and 0.001 < clipped <= 0.01 + 1e-6


class PushPullGrid(FakeGrid):
    """FakeGrid with Flower's push/pull: a pushed message is answered at once, its reply kept
    until pulled."""

    def __init__(self, *args):
        super().__init__(*args)
        self.waiting: dict[str, Message] = {}

    def push_messages(self, messages):
        ids = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = f"physical-{len(self.sent)}"
            self.waiting[message.metadata.message_id] = self.send_and_receive([message])[0]
            ids.append(message.metadata.message_id)
        return ids

    def pull_messages(self, message_ids):
        return [self.waiting.pop(i) for i in message_ids if i in self.waiting]


def test_push_and_pull_on_virtual_nodes(setup):
    _, message_config, initial = setup
    physical = PushPullGrid(client_app, NODES)
    grid = LogicalGrid(physical, num_partitions=CLIENTS, num_nodes=NODES,
                       message_config=message_config)
    content = RecordDict({"arrays": initial, "config": ConfigRecord({"server-round": 1})})
    nodes = grid.get_node_ids()[:6]
    ids = list(grid.push_messages([Message(content, dst_node_id=n, message_type="train")
                                   for n in nodes]))
    assert len(ids) == 6 and len(physical.waiting) == NODES  # packed: one per physical node
    first = grid.pull_messages(ids[:2])
    assert [r.metadata.reply_to_message_id for r in first] == ids[:2]
    rest = grid.pull_messages(ids)
    assert sorted(r.metadata.reply_to_message_id for r in rest) == sorted(ids[2:])
    assert sorted(r.metadata.src_node_id for r in first + rest) == nodes
    assert all(r.content["metrics"]["num-examples"] > 0 for r in first + rest)
    assert grid.pull_messages(ids) == []  # each reply is handed out once
