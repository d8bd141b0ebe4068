"""Cohort mode computes the same per-client rounds as one client at a time, for every class that
declares batching (clients/cohort.py), and only for those."""

import numpy as np
import pytest

from clients import cohort
from clients.fedncf import FedNCFClient
from clients.fedrecgel import FedRecGELClient
from fedsim.app import client_app
from fedsim.federation import load_federation
from fedsim.methods import METHODS
from fedsim.spec import resolve
from tests.helpers import MemoryStore, private_arrays, run_fake

FILMTRUST = {"dataset": "filmtrust", "method": "fedrecgel", "fedrecgel.rho_sh": 0.05,
             "fedrecgel.rho_ns": 0.05}
# One spec per class that declares batching: FedNCF's plain gradient, FedRecGEL's SAM passes
# (both radii on; item-wise shared radius or not).
BATCHING = {"fedncf": ({"dataset": "filmtrust", "method": "fedncf"}, FedNCFClient),
            "fedrecgel": (FILMTRUST, FedRecGELClient),
            "fedrecgel-item-centric": ({**FILMTRUST, "fedrecgel.item_centric": True},
                                       FedRecGELClient)}


def _relative_error(got: np.ndarray, want: np.ndarray) -> float:
    """||got - want|| / ||want||: float tolerance for a whole tensor (elementwise tolerance is
    too strict where a SAM-perturbed gradient has entries near 0)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30))


def _messages(spec, partitions, server_round, full):
    """What the server sends each client in a round: the dense layers and its item rows."""
    clients = [METHODS[spec["method"]].client_class()(spec, p) for p in partitions]
    item_tables = clients[0].backbone.ITEM_TABLES
    shared = {name: value for name, value in full.items() if name not in item_tables}
    owns = []
    for client in clients:
        ids = client.needed_items(server_round)
        owns.append({"item_ids": ids, **{k: full[k][ids] for k in client.backbone.ITEM_TABLES}})
    return clients, shared, owns


@pytest.mark.parametrize("case", list(BATCHING))
@pytest.mark.slow
def test_cohort_round_equals_the_clients_one_by_one_on_filmtrust(case, data_dir):
    """Two rounds (the second uses the Adam state of the first) of 24 FilmTrust clients of each
    batching class: uploads, losses and private state agree to float tolerance."""
    overrides, cls = BATCHING[case]
    spec = resolve({**overrides, "data_dir": str(data_dir)})
    federation = load_federation(spec)
    method = METHODS[spec["method"]]
    full = {k: v.numpy() for k, v in method.initial_arrays(spec, federation).items()}
    partitions = list(range(0, 1200, 50))
    one_by_one = [MemoryStore() for _ in partitions]
    batched = [MemoryStore() for _ in partitions]
    for server_round in (1, 2):
        clients, shared, owns = _messages(spec, partitions, server_round, full)
        assert type(clients[0]) is cls and cohort.supports(clients, shared, training=True)
        expected = [c.train(shared, own, store, server_round)
                    for c, own, store in zip(clients, owns, one_by_one)]
        got = cls.train_batch(clients, shared, owns, batched, server_round)
        errors = {name: [] for name in expected[0][0] if name != "item_ids"}
        for (want_up, want_m), (got_up, got_m) in zip(expected, got):
            assert want_up.keys() == got_up.keys()
            np.testing.assert_array_equal(want_up["item_ids"], got_up["item_ids"])
            for name in errors:
                errors[name].append(_relative_error(got_up[name], want_up[name]))
            assert got_m["num-examples"] == want_m["num-examples"]
            assert got_m["train-loss"] == pytest.approx(want_m["train-loss"], rel=1e-5)
        for name, values in errors.items():
            # Typically 1e-7. A client whose slightly different user row (after round 1's Adam)
            # puts a ReLU input on the other side of 0 differs in that sample's rows only.
            assert np.median(values) < 1e-5 and max(values) < 1e-2, (name, values)
        for want, have in zip(one_by_one, batched):
            assert want.saved.keys() == have.saved.keys()
            for name in want.saved:
                assert _relative_error(have.saved[name], want.saved[name]) < 1e-4, name


@pytest.mark.parametrize("case", ["fedncf", "fedrecgel"])
def test_cohort_evaluation_equals_the_clients_one_by_one(case, data_dir):
    overrides, cls = BATCHING[case]
    spec = resolve({**overrides, "eval_full_every": 1, "data_dir": str(data_dir)})
    federation = load_federation(spec)
    method = METHODS[spec["method"]]
    shared = {k: v.numpy() for k, v in method.initial_arrays(spec, federation).items()}
    clients = [method.client_class()(spec, p) for p in range(0, 1200, 40)]
    stores = [MemoryStore() for _ in clients]
    # An evaluation message carries the whole item table: cohort mode must still take it.
    assert type(clients[0]) is cls and cohort.supports(clients, shared, training=False)
    assert not cohort.supports(clients, shared, training=True)
    expected = [c.evaluate(shared, {}, s, 1)[1] for c, s in zip(clients, stores)]
    got = [m for _, m in cls.evaluate_batch(clients, shared, stores, 1)]
    assert any("hr@10_full" in m for m in got)
    for want, have in zip(expected, got):
        assert want.keys() == have.keys()
        for name in want:
            assert have[name] == pytest.approx(want[name], abs=1e-9), name


@pytest.mark.slow
def test_cohort_run_matches_one_client_per_node():
    """The issue's check: a whole run with cohorts of many clients per node and one with one
    client per node end with the same parameters and private state (float tolerance)."""
    # 100 users: one node per client is costly on Flower's in-memory grid.
    overrides = {"dataset": "synthetic-rec", "data.synthetic_users": 100, "method": "fedrecgel",
                 "rounds": 3, "fraction": 0.2, "eval_every": 3, "fedrecgel.rho_sh": 0.05}
    batched, batched_history, _ = run_fake({**overrides, "nodes": 2})
    single, single_history, _ = run_fake({**overrides, "nodes": 0})
    for name, value in single.params.items():
        assert _relative_error(batched.params[name].numpy(), value.numpy()) < 1e-4, name
    batched_private = private_arrays(batched)
    errors = [_relative_error(batched_private[partition][name], value)
              for partition, arrays in private_arrays(single).items()
              for name, value in arrays.items()]
    assert np.median(errors) < 1e-5 and max(errors) < 1e-2
    assert batched_history[-1]["hr@10"] == pytest.approx(single_history[-1]["hr@10"], abs=0.01)


class OwnTraining(FedNCFClient):
    """A client that changes FedNCF's round (here: records it) without declaring batching."""

    trained: list[int] = []

    def train(self, shared, own, state, server_round):
        OwnTraining.trained.append(self.partition_id)
        return super().train(shared, own, state, server_round)


class DeclaredTraining(OwnTraining):
    """The same subclass declaring batching: cohort mode then takes it (the declaration says
    that the batched twin computes its round)."""

    def batchable(self, shared, training):
        return super().batchable(shared, training)


@pytest.mark.slow
def test_a_subclass_that_does_not_declare_batching_runs_one_client_at_a_time(monkeypatch):
    """Under cohort = true, a subclass of a batching class trains with its own ``train``, one
    client at a time: the declaration is not inherited."""
    overrides = {"dataset": "synthetic-rec", "data.synthetic_users": 100, "method": "fedncf",
                 "rounds": 1, "fraction": 0.2, "eval_every": 1, "nodes": 2, "cohort": True}
    spec = resolve(overrides)
    clients = [OwnTraining(spec, p) for p in (0, 2)]
    assert not cohort.supports(clients, {}, training=True)
    assert cohort.supports([DeclaredTraining(spec, p) for p in (0, 2)], {}, training=True)
    monkeypatch.setattr(client_app, "_client", lambda spec_json, partition: OwnTraining(
        client_app._spec(spec_json), partition))
    monkeypatch.setattr(OwnTraining, "trained", [])
    strategy, history, _ = run_fake(overrides)
    assert sorted(OwnTraining.trained) == strategy.sample(1)  # 20 clients on 2 nodes
    assert history[-1]["failures"] == 0
