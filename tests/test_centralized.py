"""The degenerate case, proven: a single-client Flower run of a centralized method is its plain
training loop.

The plain loop below is written from the documented contract only (fedsim/centralized/bpr.py:
draw order of batches and negatives; fedsim/models/bprmf.py: initialisation; aurl.py: the loss)
and shares no training code with the pipeline. The Flower run goes through the real ClientApp,
strategy, private store and checkpoints on the in-process grid (tests/fake_grid.py).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fedsim.app.client_app import _client
from fedsim.app.private_store import SUFFIX, read_version
from fedsim.methods.centralized import make_trainer
from fedsim.metrics.pooling import pooled_means
from fedsim.federation import load_federation
from fedsim.runner.checkpoint import load_checkpoint
from fedsim.runner.experiment import run_on_grid
from fedsim.spec import resolve
from tests.fake_grid import FakeGrid

# BPR-MF, the plain backbone (both AURL weights 0), on real data, 3 epochs = 3 rounds.
# The centralized specs' split (RecBole's) and learning rate (experiments/centralized).
SPEC = {"method": "aurl", "model": "bprmf", "dataset": "movielens-100k", "partitioner": "single",
        "fraction": 1.0, "nodes": 1, "rounds": 3, "seed": 7, "aurl.lambda_ga": 0.0,
        "aurl.lambda_gu": 0.0, "central.dim": 32, "central.batch_size": 4096,
        "central.lr": 0.005, "data.protocol": "recbole"}


@pytest.fixture(autouse=True)
def one_torch_thread():
    """On the shared 2-core machine torch's second intra-op thread mostly spins (an epoch took
    30x longer); results are the same either way (rows are gathered with F.embedding)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def flower_run(spec: dict, out, resume: bool = False) -> list[dict]:
    """Run on a fresh grid and fresh client objects (as a new process would); the records."""
    from fedsim.app.client_app import app

    _client.cache_clear()
    records: list[dict] = []
    run_on_grid(FakeGrid(app, 1), resolve(spec), out, on_record=records.append, resume=resume)
    return records


def plain_epochs(tables, ego, optimizer, data, seed: int, epochs: int, batch_size: int,
                 l2: float) -> None:
    """BPR training by hand: epoch e's batches and negatives are drawn from
    default_rng([seed, 0, e]) (client 0's generator in round e); ``tables()`` gives the user
    and item representations, ``ego`` the layer-0 tables the L2 term acts on."""
    counts = np.diff(data.train_indptr)
    all_users, all_items = np.repeat(np.arange(data.num_users), counts), data.train_indices
    seen = np.zeros((data.num_users, data.num_items), dtype=bool)
    seen[all_users, all_items] = True
    for epoch in range(1, epochs + 1):
        rng = np.random.default_rng([seed, 0, epoch])
        order = rng.permutation(len(all_users))
        users, positives = all_users[order], all_items[order]
        negatives = rng.integers(data.num_items, size=len(users))
        bad = seen[users, negatives]
        while bad.any():
            negatives[bad] = rng.integers(data.num_items, size=int(bad.sum()))
            bad[bad] = seen[users[bad], negatives[bad]]
        for start in range(0, len(users), batch_size):
            u, p, n = (torch.from_numpy(a[start:start + batch_size])
                       for a in (users, positives, negatives))
            user_emb, item_emb = tables()
            eu = F.embedding(u, user_emb)
            margin = (eu * F.embedding(p, item_emb)).sum(-1) - (eu * F.embedding(n, item_emb)).sum(-1)
            squares = (F.embedding(u, ego[0]).pow(2).sum() + F.embedding(p, ego[1]).pow(2).sum()
                       + F.embedding(n, ego[1]).pow(2).sum())
            loss = -F.logsigmoid(margin).mean() + l2 * (squares / 2 / len(u))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


def plain_bprmf(data, seed: int, epochs: int, dim: int, batch_size: int, lr: float, l2: float):
    """BPR-MF from scratch: N(0, 0.1²) tables seeded by ``seed``, Adam, :func:`plain_epochs`."""
    torch.manual_seed(seed)
    user, item = torch.nn.Embedding(data.num_users, dim), torch.nn.Embedding(data.num_items, dim)
    torch.nn.init.normal_(user.weight, std=0.1)
    torch.nn.init.normal_(item.weight, std=0.1)
    tables = (user.weight, item.weight)
    plain_epochs(lambda: tables, tables, torch.optim.Adam(tables, lr=lr), data, seed, epochs,
                 batch_size, l2)
    return {"user.weight": user.weight.detach(), "item.weight": item.weight.detach()}


@pytest.mark.slow
def test_single_client_flower_run_equals_the_plain_training_loop(data_dir, tmp_path):
    records = flower_run({**SPEC, "eval_every": 3}, tmp_path / "flower")  # rounds 0 and 3
    spec = resolve(SPEC)
    data = load_federation(spec).dataset
    plain = plain_bprmf(data, spec["seed"], spec["rounds"], spec["central.dim"],
                        spec["central.batch_size"], spec["central.lr"], spec["aurl.l2"])
    final = load_checkpoint(tmp_path / "flower")["arrays"]
    assert final["user.weight"].numpy().shape == (data.num_users, 32)
    for name, weights in plain.items():
        assert torch.equal(torch.from_numpy(final[name].numpy()), weights), name

    # Metrics: the pipeline's evaluation of the plain model gives the Flower run's last record
    # exactly, and its full-ranking HR@10 matches a hand-computed one.
    trainer = make_trainer(spec, data, np.arange(data.num_users))
    model = trainer.build_model()
    model.load_state_dict(plain)
    with torch.no_grad():
        plain_metrics = pooled_means(trainer.evaluate(model))
    last = records[-1]
    assert last["round"] == 3 and len(records) == 4 and "train_loss" in last
    for name, value in plain_metrics.items():
        assert last[name] == value, name
    scores = (plain["user.weight"] @ plain["item.weight"].T).numpy()
    hits = []
    for u in range(data.num_users):
        allowed = np.ones(data.num_items, bool)
        allowed[data.user_items(u)] = False
        allowed[data.val_items[u]] = False
        hits.append((scores[u, allowed] >= scores[u, data.test_items[u]]).sum() - 1 < 10)
    assert last["hr@10_full"] == np.mean(hits)
    # It trained: full-ranking HR@10 0.003 at round 0, 0.057 at round 3 (seed 7).
    assert last["hr@10_full"] > records[0]["hr@10_full"] + 0.03


@pytest.mark.slow
def test_a_resumed_single_client_run_keeps_the_adam_moments(data_dir, tmp_path):
    """Rounds 1-2, then a fresh grid and fresh client objects resume for rounds 3-4: the
    result equals 4 uninterrupted rounds only if the moments came back from the private store."""
    straight = flower_run({**SPEC, "rounds": 4, "eval_every": 4}, tmp_path / "straight")
    flower_run({**SPEC, "rounds": 2, "eval_every": 4}, tmp_path / "resumed")
    store = tmp_path / "resumed" / "client_state"
    saved = sorted(store.glob(f"*/0/r*{SUFFIX}"))
    assert [p.stem for p in saved] == ["r000001", "r000002"]
    moments = read_version(saved[-1])
    assert float(moments["0.step"][0]) == 2 * 24  # 2 epochs of ceil(98,114 / 4,096) steps
    resumed = flower_run({**SPEC, "rounds": 4, "eval_every": 4}, tmp_path / "resumed",
                         resume=True)
    ends = [load_checkpoint(tmp_path / name)["arrays"] for name in ("straight", "resumed")]
    for name in ("user.weight", "item.weight"):
        np.testing.assert_array_equal(ends[0][name].numpy(), ends[1][name].numpy(), name)
    assert resumed[-1]["ndcg@10_full"] == straight[-1]["ndcg@10_full"]
    assert json.loads((tmp_path / "resumed" / "summary.json").read_text())["rounds"] == 4


@pytest.mark.parametrize("model", ["bprmf", "lightgcn"])
def test_the_model_arrays_are_the_embedding_tables_only(data_dir, model):
    """LightGCN's adjacency is data, not weights: both backbones exchange the same arrays."""
    spec = resolve({**SPEC, "model": model})
    federation = load_federation(spec)
    trainer = make_trainer(spec, federation.dataset, federation.train_parts[0])
    model = trainer.build_model()
    assert sorted(model.state_dict()) == ["item.weight", "user.weight"]
    # What the attribute-inference audit reads: one row per user of the client.
    assert trainer.user_embeddings(model).shape == (federation.dataset.num_users, 32)


def test_aurl_with_zero_weights_is_the_plain_lightgcn_bit_for_bit(data_dir):
    """The trainer's epoch with both AURL weights 0 = the plain BPR loop above on the same
    LightGCN (its propagation is checked against a dense one in tests/test_aurl.py)."""
    spec = resolve({**SPEC, "model": "lightgcn"})
    federation = load_federation(spec)
    trainer = make_trainer(spec, federation.dataset, federation.train_parts[0])
    torch.manual_seed(0)
    ours = trainer.build_model()
    plain = trainer.build_model()
    plain.load_state_dict(ours.state_dict())
    trainer.train_epoch(ours, trainer.make_optimizer(ours),
                        np.random.default_rng([spec["seed"], 0, 1]))
    plain_epochs(plain, (plain.user.weight, plain.item.weight),
                 torch.optim.Adam(plain.parameters(), lr=spec["central.lr"]), federation.dataset,
                 spec["seed"], 1, spec["central.batch_size"], spec["aurl.l2"])
    for name, value in plain.state_dict().items():
        assert torch.equal(ours.state_dict()[name], value), name
