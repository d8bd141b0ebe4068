"""PFedRec: one client's rounds and the server's mean against a plain-torch rewrite of the
authors' engine.py, the round sample, evaluation with each client's own rows (exact for sampled
ranking under partial participation), privacy of the score function and personal rows over a
fake-grid run, and the authors' round-selection rule."""

from pathlib import Path

import numpy as np
import pytest
import torch

from clients import cohort
from clients.pfedrec import PersonalScorer, PFedRecClient
from fedsim.metrics.leave_one_out import per_user_metrics
from fedsim.app.client_app import app as client_app
from fedsim.cli import report
from fedsim.federation import load_federation
from fedsim.methods import METHODS
from fedsim.models.pfedrec import initial_model
from fedsim.protocol import read_reply
from fedsim.runner.results import build_summary
from fedsim.spec import SpecError, resolve
from strategies.pfedrec import UPLOAD, apply_mean_change
from tests.fake_grid import FakeGrid
from tests.helpers import MemoryStore, private_arrays, run_fake

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see tests/conftest.py

# Small batches and two epochs, so that a round has several batches and reshuffles.
SPEC = {"dataset": "synthetic-rec", "method": "pfedrec", "data.protocol": "pfedrec",
        "data.synthetic_users": 40,
        "pfedrec.batch_size": 32, "pfedrec.local_epochs": 2}


def _spec(**overrides):
    return resolve({**SPEC, **overrides})


# --- the authors' loop, written from engine.py / mlp.py ---------------------------------------
#
# Shares no code with fedsim: the authors' MLP (nn.Embedding over every item, nn.Linear(dim, 1),
# sigmoid), torch.nn.BCELoss, and their two SGD optimizers, stepped as fed_train_single_batch
# does (score function, then a fresh forward and the item table), on the dense table.

def authors_client_round(table, w, b, items, labels, orders, lr, lr_eta, batch_size):
    """(item table, w, b) after one client's local training in the authors' engine."""
    num_items, dim = table.shape
    embedding = torch.nn.Embedding(num_items, dim)
    affine = torch.nn.Linear(dim, 1)
    with torch.no_grad():
        embedding.weight.copy_(torch.from_numpy(table))
        affine.weight.copy_(torch.from_numpy(w)[None])
        affine.bias.copy_(torch.from_numpy(b))
    model = lambda it: torch.sigmoid(affine(embedding(it)))  # noqa: E731 (mlp.py's forward)
    crit = torch.nn.BCELoss()
    optimizer = torch.optim.SGD(affine.parameters(), lr=lr)
    optimizer_i = torch.optim.SGD(embedding.parameters(), lr=lr * num_items * lr_eta)
    for order in orders:
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            it, y = torch.from_numpy(items[batch]), torch.from_numpy(labels[batch])
            optimizer.zero_grad()
            crit(model(it).view(-1), y).backward()
            optimizer.step()
            optimizer_i.zero_grad()
            crit(model(it).view(-1), y).backward()
            optimizer_i.step()
    return (embedding.weight.detach().numpy(), affine.weight.detach().numpy()[0],
            affine.bias.detach().numpy())


def _client_train(client, table, store, server_round):
    """What the client uploads when sent the rows it asks for of `table`."""
    ids = client.needed_items(server_round)
    upload, metrics = client.train({}, {"item_ids": ids, "item_table": table[ids]}, store,
                                   server_round)
    return ids, upload, metrics


def _busiest(spec) -> int:
    data = load_federation(spec).dataset
    return int(np.argmax(np.diff(data.train_indptr)))


@pytest.mark.parametrize("scale", [1, 30], ids=["initial", "saturated"])
def test_client_rounds_are_the_authors_two_step_update(scale):
    """Two rounds of one client (the second from its stored score function and another global
    table): the rows it uploads (received + change), its stored score function and personal
    rows equal the authors' loop on the dense table, whose other rows stay the global ones.
    With the initial table scaled up, some float32 sigmoids round to 0 or 1, where the authors'
    BCE on probabilities has a zero gradient (BCE on logits would not)."""
    spec = _spec()
    partition = _busiest(spec)
    client = PFedRecClient(spec, partition)
    assert len(client.round_sample(1)[0]) > 2 * spec["pfedrec.batch_size"]
    table, w, b = (np.array(a) for a in initial_model(client.data.num_items, 32, spec["seed"]))
    table *= scale
    saturated = torch.sigmoid(torch.from_numpy(table @ w + b)).numpy()
    assert ((saturated == 0) | (saturated == 1)).any() == (scale > 1)
    store = MemoryStore()
    for server_round in (1, 2):
        ids, upload, _ = _client_train(client, table, store, server_round)
        items, labels, orders = client.round_sample(server_round)
        want_table, w, b = authors_client_round(table, w, b, items, labels, orders, 0.1, 80,
                                                spec["pfedrec.batch_size"])
        assert np.array_equal(upload["item_ids"], ids)
        np.testing.assert_allclose(table[ids] + upload["item_table"], want_table[ids],
                                   rtol=1e-5, atol=1e-5)
        untouched = np.setdiff1d(np.arange(len(table)), items)
        assert np.array_equal(want_table[untouched], table[untouched])
        saved = store.load()
        np.testing.assert_allclose(saved["weight"], w, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(saved["bias"], b, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(saved["item_rows"], want_table[ids], rtol=1e-5, atol=1e-5)
        # The next round's global table: some other clients moved it.
        table = table + np.random.default_rng(server_round).normal(0, 0.1, table.shape
                                                                    ).astype(np.float32)


def test_sparse_mean_is_the_authors_dense_mean():
    """Four clients train from one global table; the server's item-sparse mean of their row
    changes, summed per client or first in two node sums, equals the authors'
    aggregate_clients_params: the mean of their whole item tables."""
    spec = _spec()
    table = np.array(initial_model(load_federation(spec).dataset.num_items, 32, spec["seed"])[0])
    uploads, dense = [], []
    for partition in (0, 3, 5, 9):
        client = PFedRecClient(spec, partition)
        ids, upload, metrics = _client_train(client, table, MemoryStore(), 1)
        uploads.append(UPLOAD.one(partition, upload, metrics))
        mine = table.copy()
        mine[ids] += upload["item_table"]
        dense.append(mine)
    want = sum(dense) / len(dense)
    for total in (UPLOAD.add(uploads), UPLOAD.add([UPLOAD.add(uploads[:2]),
                                                   UPLOAD.add(uploads[2:])])):
        got = table.copy()
        apply_mean_change(got, total)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        assert not np.allclose(got, table)


def test_round_sample():
    """Every training positive once per epoch with 4 distinct negatives the user never rated
    (validation and test items excluded); fresh negatives each round; the rows asked for
    cover the samples and the evaluation candidates."""
    for partition in range(40):
        client = PFedRecClient(_spec(), partition)
        data, user = client.data, client.user
        items, labels, orders = client.round_sample(1)
        blocks = items.reshape(-1, 5)
        assert sorted(blocks[:, 0]) == sorted(data.user_items(user))
        assert labels.sum() == len(blocks)
        rated = {*data.user_items(user), data.val_items[user], data.test_items[user]}
        assert all(len(set(row)) == 4 and not set(row) & rated for row in blocks[:, 1:].tolist())
    assert len(orders) == 2 and all(sorted(o) == list(range(len(items))) for o in orders)
    assert not np.array_equal(client.round_sample(2)[0], items)
    needed = client.needed_items(1)
    assert np.isin(items, needed).all() and np.isin(client.candidates(), needed).all()
    assert len(client.candidates()) == 2 + 2 * 99


def _dense_metrics(client, table, w, b, full):
    """Per-user metrics of `client` scored on a whole item table."""
    ids = np.arange(len(table))
    return per_user_metrics(PersonalScorer([table], [ids], [table], [w], [b]), client.data,
                            client.users, 0.2, full)


def test_evaluation_uses_the_clients_own_rows():
    """A client trained in round 1 and evaluated in a later round, under another global table:
    its sampled metrics equal those of its true personal table (round 1's global table with its
    changed rows), its full-ranking ones too when sent round 1's table; without any, the initial
    model. The personal table ranks differently from the global one (the test is not vacuous)."""
    spec = _spec()
    client = PFedRecClient(spec, 7)
    table, w0, b0 = initial_model(client.data.num_items, 32, spec["seed"])
    store = MemoryStore()
    ids, upload, _ = _client_train(client, np.array(table), store, 1)
    personal = np.array(table)
    personal[ids] += upload["item_table"]
    saved = store.load()
    want = _dense_metrics(client, personal, saved["weight"], saved["bias"], full=True)
    # Another global table, where the held-out items move to the other end of the ranking.
    later = personal + np.random.default_rng(0).normal(0, 1, personal.shape).astype(np.float32)
    direction = saved["weight"] / np.linalg.norm(saved["weight"])
    for held_out, prefix in ((client.data.test_items, ""), (client.data.val_items, "val_")):
        sign = -1 if want[f"{prefix}hr@10"].sum() else 1
        later[held_out[client.user]] = personal[held_out[client.user]] + sign * 100 * direction
    got = {}
    for sent in (later, np.array(table)):
        got = {k: v for k, v in client.evaluate({"item_table": sent}, {}, store, 2)[1].items()}
        assert all(np.isclose(got[k], want[k].sum()) for k in want if "full" not in k)
    assert all(np.isclose(got[k], want[k].sum()) for k in want)
    sent_round_1 = client.personal_table({"item_table": np.array(table)}, store)
    true_scores = torch.sigmoid(torch.from_numpy(personal @ saved["weight"] + saved["bias"]))
    assert torch.allclose(PersonalScorer(*zip(sent_round_1)).score_all(torch.arange(1))[0],
                          true_scores)
    fresh = client.evaluate({"item_table": later}, {}, MemoryStore(), 2)[1]
    initial = _dense_metrics(client, np.array(table), w0, b0, full=True)
    assert all(np.isclose(fresh[k], initial[k].sum()) for k in initial)
    ranked_globally = _dense_metrics(client, later, saved["weight"], saved["bias"], full=True)
    assert all(not np.isclose(ranked_globally[k].sum(), want[k].sum()) for k in ("hr@10",
                                                                                  "val_hr@10"))


def test_cohort_training_equals_one_client_at_a_time():
    """Cohort mode trains a node's clients together: eight clients of different sample counts
    (so different numbers of batches), two rounds (the second from each one's stored score
    function), uploads, metrics and stored state equal to each client trained alone."""
    spec = _spec()
    table = np.array(initial_model(load_federation(spec).dataset.num_items, 32, spec["seed"])[0])
    clients = [PFedRecClient(spec, p) for p in (0, 2, 4, 11, 17, 23, 31, _busiest(spec))]
    sizes = {len(c.round_sample(1)[0]) // spec["pfedrec.batch_size"] for c in clients}
    assert len(sizes) > 2 and cohort.supports(clients, {}, training=True)
    together, alone = [MemoryStore() for _ in clients], [MemoryStore() for _ in clients]
    for server_round in (1, 2):
        owns = [{"item_ids": ids, "item_table": table[ids]}
                for ids in (c.needed_items(server_round) for c in clients)]
        batched = PFedRecClient.train_batch(clients, {}, owns, together, server_round)
        for k, client in enumerate(clients):
            upload, metrics = client.train({}, owns[k], alone[k], server_round)
            got, want = batched[k], (upload, metrics)
            assert np.array_equal(got[0]["item_ids"], want[0]["item_ids"])
            np.testing.assert_allclose(got[0]["item_table"], want[0]["item_table"],
                                       rtol=1e-4, atol=1e-4)
            assert got[1]["num-examples"] == want[1]["num-examples"]
            assert np.isclose(got[1]["train-loss"], want[1]["train-loss"], rtol=1e-5)
            for name, value in alone[k].load().items():
                np.testing.assert_allclose(together[k].load()[name], value, rtol=1e-4,
                                           atol=1e-4)
        table = table + np.random.default_rng(server_round).normal(0, 0.1, table.shape
                                                                    ).astype(np.float32)


def test_cohort_evaluation_equals_one_client_at_a_time():
    """Cohort mode evaluates a node's clients together: six clients, four trained in round 1
    and two never, each with its own metric sums equal to its evaluation alone, sampled and
    full ranking."""
    spec = _spec()
    table = np.array(initial_model(load_federation(spec).dataset.num_items, 32, spec["seed"])[0])
    clients = [PFedRecClient(spec, p) for p in (0, 4, 11, 17, 23, 31)]
    stores = [MemoryStore() for _ in clients]
    for client, store in list(zip(clients, stores))[:4]:
        _client_train(client, table, store, 1)
    shared = {"item_table": table + 0.5}  # a later global table: every client ranks its own
    assert cohort.supports(clients, shared, training=False)
    batched = PFedRecClient.evaluate_batch(clients, shared, stores, spec["rounds"])
    assert len(batched) == len(clients)
    for client, store, (arrays, sums) in zip(clients, stores, batched):
        alone = client.evaluate(shared, {}, store, spec["rounds"])[1]
        assert arrays == {} and set(sums) == set(alone) and "hr@10_full" in sums
        assert all(np.isclose(sums[k], alone[k]) for k in alone), client.partition_id
    # The scores behind the metrics, user by user.
    tables = [c.personal_table(shared, store) for c, store in zip(clients, stores)]
    together = PersonalScorer(*zip(*tables))
    candidates = torch.from_numpy(np.stack([c.candidates()[:100] for c in clients]))
    for k, parts in enumerate(tables):
        alone = PersonalScorer(*zip(parts))
        assert torch.allclose(together.score_all(torch.arange(6))[k],
                              alone.score_all(torch.arange(1))[0])
        assert torch.allclose(together.score_candidates(torch.arange(6), candidates)[k],
                              alone.score_candidates(torch.arange(1), candidates[k:k + 1])[0])


def test_run_keeps_the_score_function_and_personal_rows_private():
    """Two full-participation rounds on a fake grid, per-client replies: no reply the server
    receives holds an array named or shaped like the score function, or a row equal to a
    client's stored w or personal item rows; and the server's table after the last round is
    the authors' dense mean of the clients' personal tables (stored rows over the table they
    trained from)."""
    strategy, history, grid = run_fake({**SPEC, "rounds": 2, "fraction": 1.0, "nodes": 4,
                                        "node_sums": False})
    assert [r["train_clients"] for r in history[1:]] == [40, 40]
    assert history[-1]["hr@10"] > 0 and history[-1]["val_hr@10"] > 0
    private = private_arrays(strategy)
    assert len(private) == 40
    replies = {kind: [client for reply in grid.replies
                      if reply.metadata.message_type.startswith(kind)
                      for client in read_reply(reply.content)[0]]
               for kind in ("query.rows", "train", "evaluate")}
    assert [len(r) for r in replies.values()] == [80, 80, 3 * 40]
    assert not any(client.arrays for client in replies["evaluate"])  # metric sums only
    uploads = [client.arrays for client in replies["query.rows"] + replies["train"]]
    assert all(set(upload) <= {"item_ids", "item_table"} for upload in uploads)
    sent_rows = {row.tobytes() for upload in uploads if "item_table" in upload
                 for row in upload["item_table"]}
    assert len(sent_rows) > 1000
    secrets = {row.tobytes() for p in private.values()
               for row in np.concatenate([p["weight"][None], p["item_rows"]])}
    assert not sent_rows & secrets
    dense = []
    for arrays in private.values():
        mine = strategy.trained_from.copy()
        mine[arrays["item_ids"]] = arrays["item_rows"]
        dense.append(mine)
    np.testing.assert_allclose(strategy.table, sum(dense) / len(dense), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("node_sums", [False, True], ids=["per-client", "node-sums"])
def test_upload_of_other_rows_is_rejected(monkeypatch, node_sums):
    """A client whose upload covers rows other than those it was sent is left out (by the
    server, or by its node before the sum), and the round goes on with the others."""
    train = PFedRecClient.train

    def shifted(self, shared, own, state, server_round):
        upload, metrics = train(self, shared, own, state, server_round)
        if self.partition_id == 5:
            upload = {"item_ids": upload["item_ids"][1:], "item_table": upload["item_table"][1:]}
        return upload, metrics

    monkeypatch.setattr(PFedRecClient, "train", shifted)
    _, history, _ = run_fake({**SPEC, "rounds": 1, "fraction": 1.0, "nodes": 4,
                              "node_sums": node_sums, "cohort": False})
    assert (history[1]["rejected"], history[1]["train_clients"]) == (1, 39)


def test_a_resumed_run_continues_like_an_uninterrupted_one(tmp_path):
    """Half the clients a round, 3 rounds straight through, against 2 rounds, the server's
    state saved and loaded into a new strategy, and round 3 (the clients' private state stays
    in the interrupted run's folder): the same round-3 record."""
    def run(out_dir, history, rounds, state=None, arrays=None):
        spec = resolve({**SPEC, "rounds": 3, "fraction": 0.5, "nodes": 4,
                        "out_dir": str(out_dir)})
        federation = load_federation(spec)
        method = METHODS["pfedrec"]
        strategy = method.build(spec, federation, {"run_id": "t", "on_round": history.append})
        if state is not None:
            strategy.load_state_dict(state)
        result = strategy.start(FakeGrid(client_app, 4),
                                arrays or method.initial_arrays(spec, federation),
                                num_rounds=rounds, start_round=2 if state else 0)
        return strategy, result

    whole, part, resumed = [], [], []
    run(tmp_path / "whole", whole, 3)
    interrupted, halfway = run(tmp_path / "part", part, 2)
    run(tmp_path / "part", resumed, 3, interrupted.state_dict(), halfway.arrays)
    assert resumed[-1]["round"] == whole[-1]["round"] == 3
    for key in ("hr@10", "val_hr@10", "ndcg@10_full", "train_loss", "train_clients"):
        assert resumed[-1][key] == whole[-1][key], key


def test_spec_needs_one_user_per_client():
    with pytest.raises(SpecError, match="one user per client.*ids_per_client = 2"):
        _spec(**{"partition.ids_per_client": 2})


def test_summary_selects_the_authors_round():
    """best_val_later: the test metrics at the round of the best validation HR@10, the later
    round on ties (train.py's `val_hit_ratio >= best_val_hr`); best_val keeps the first."""
    history = [{"round": r, "hr@10": t, "val_hr@10": v}
               for r, t, v in ((0, 0.0, 0.5), (1, 0.1, 0.2), (2, 0.3, 0.4), (3, 0.2, 0.4),
                               (4, 0.5, 0.3))]
    summary = build_summary(_spec(), history, "hr@10", 40, wall_seconds=1.0)
    assert summary["best_val"]["round"] == 2
    assert summary["best_val_later"]["round"] == 3
    assert summary["best_val_later"]["metrics"]["hr@10"] == 0.2
    # `fedsim run` prints it, with its round and rule, where it picks another round.
    printed = report(summary, Path("out"))
    assert "best_val_later (round 3, highest val_hr@10" in printed and "later" in printed
    summary["best_val_later"] = summary["best_val"]
    assert "best_val_later" not in report(summary, Path("out"))
