"""Reliability: resume after SIGKILL, failing and straggling clients, malformed updates."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from fedsim.runner.checkpoint import load_checkpoint
from tests.helpers import run_fake

REC = {"dataset": "synthetic-rec", "rounds": 4, "fraction": 0.05, "nodes": 2, "eval_every": 2}
TAB = {"dataset": "synthetic-tabular", "method": "fedavg", "model": "logreg",
       "partitioner": "dirichlet", "num_clients": 10, "fraction": 1.0, "rounds": 3,
       "fedavg.lr": 0.1, "fedavg.local_epochs": 3, "nodes": 0}


@pytest.mark.slow
def test_a_run_killed_mid_way_resumes_to_the_uninterrupted_result(tmp_path):
    """SIGKILL `fedsim run` after round 2, `fedsim run --resume`, compare with a run that was
    never interrupted (same spec on the in-process grid: results do not depend on the runtime)."""
    out = tmp_path / "run"
    args = [sys.executable, "-m", "fedsim.cli", "run"]
    sets = [f"--set={k}={json.dumps(v)}" for k, v in REC.items()] + ["--set=rounds=6"]
    first = subprocess.Popen(args + sets + ["--out", str(out)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if (out / "checkpoint.pt").exists() and load_checkpoint(out)["round"] >= 2:
                break
            time.sleep(0.2)
        os.killpg(first.pid, signal.SIGKILL)  # the driver and its Ray processes, no cleanup
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    killed_at = load_checkpoint(out)["round"]
    assert 2 <= killed_at < 6, "the run was not interrupted mid-way"

    resumed = subprocess.run(args + ["--resume", str(out)], capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    reference, history, _ = run_fake({**REC, "rounds": 6})
    final = load_checkpoint(out)
    assert final["round"] == 6
    for name, value in reference.params.items():
        np.testing.assert_array_equal(final["arrays"][name].numpy(), value.numpy(), name)
    records = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    assert [r["round"] for r in records] == list(range(7))
    for mine, theirs in zip(records, history):
        for key in ("hr@10", "ndcg@10_full", "val_hr@10", "train_loss", "bytes_up"):
            assert mine.get(key) == theirs.get(key), (mine["round"], key)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final"]["hr@10"] == history[-1]["hr@10"]


def test_twenty_percent_failing_clients_are_counted_and_left_out():
    _, clean, _ = run_fake(TAB)
    strategy, faulty, _ = run_fake({**TAB, "faults.rate": 0.2})
    failures = [r["failures"] for r in faulty[1:]]
    assert sum(failures) > 0 and all(f < 10 for f in failures)  # 10 clients a round
    assert faulty[0]["failures"] == 0  # evaluation is never injected
    # The valid 80% still train the model past the majority-class start.
    assert faulty[-1]["accuracy"] > faulty[0]["accuracy"] + 0.02
    assert np.isfinite(faulty[-1]["train_loss"])
    assert faulty[-1]["train_loss"] != clean[-1]["train_loss"]  # fewer clients averaged


def test_a_round_below_min_replies_leaves_the_model_unchanged():
    strategy, history, grid = run_fake({**TAB, "faults.rate": 0.2, "min_replies": 1.0})
    skipped = [r["round"] for r in history if r.get("skipped")]
    assert skipped, "with 20% failures some round must miss a quorum of all clients"
    for server_round in skipped:  # skipped rounds keep the previous evaluation exactly
        assert history[server_round]["accuracy"] == history[server_round - 1]["accuracy"]


@pytest.mark.parametrize("spec", [
    {**TAB, "nodes": 2, "round_timeout": 10.0},  # 5 clients a node, replies summed on the node
    {**TAB, "nodes": 2, "round_timeout": 10.0, "node_sums": False},  # per-client replies
    # cohort mode, summed: a phase computes in up to ~6 s here (FakeGrid: node after node)
    {**REC, "rounds": 2, "eval_every": 1, "round_timeout": 30.0},
], ids=["node-sums", "per-client", "cohort"])
def test_stragglers_fail_alone_and_the_fast_clients_updates_count(caplog, spec):
    """30% of the clients straggle 300 s, far past the round timeout, on nodes that host several
    clients: each node replies by its deadline with the other clients, which count exactly as
    if the stragglers had raised (same draw), and the stragglers are failed for the deadline.
    Generous margins (a phase computes in well under the timeout, and stragglers are not waited
    out) keep it robust on a loaded machine; before the per-client deadline a straggler failed
    its whole node's clients."""
    from fedsim.app.client_app import inject_fault
    from fedsim.spec import resolve

    spec = {**spec, "faults.rate": 0.3, "faults.kind": "straggler", "faults.delay": 300.0}
    strategy, history, _ = run_fake(spec)
    resolved = resolve(spec)
    drawn = [sum(inject_fault(resolved, p, r) for p in strategy.sample(r))
             for r in range(1, resolved["rounds"] + 1)]
    assert any(drawn) and all(d < len(strategy.sample(1)) / 2 for d in drawn)
    assert [r["failures"] for r in history] == [0, *drawn]  # the stragglers, no one else
    assert "deadline: injected straggler" in caplog.text
    _, raised, _ = run_fake({**spec, "faults.kind": "exception"})
    headline = "accuracy" if "accuracy" in history[0] else "hr@10"
    for straggled, failed in zip(history, raised):
        for key in (headline, "train_loss", "train_clients"):
            assert straggled.get(key) == failed.get(key), (straggled["round"], key)
    # and they train: past the majority class (accuracy), past the initial ranking (hr@10)
    assert history[-1][headline] > history[0][headline] + 0.02


@pytest.mark.parametrize("corruption, reason", [
    (lambda up: {**up, "item_gmf.weight": up["item_gmf.weight"] * np.nan}, "non-finite"),
    (lambda up: {**up, "head.weight": up["head.weight"][:, :3]}, "head.weight"),
    (lambda up: {**up, "item_ids": up["item_ids"] + 10_000}, "outside"),
    (lambda up: {**up, "head.bias": np.zeros(1 << 19, np.float32)}, "max_reply_bytes"),
])
@pytest.mark.slow
def test_malformed_updates_are_rejected_and_never_aggregated(monkeypatch, caplog, corruption,
                                                              reason):
    from clients.fedncf import FedNCFClient

    train = FedNCFClient.train

    def corrupt(self, shared, own, state, server_round):
        upload, metrics = train(self, shared, own, state, server_round)
        return (corruption(upload) if self.partition_id % 2 else upload), metrics

    monkeypatch.setattr(FedNCFClient, "train", corrupt)
    # One client at a time: the corruption is patched into the per-client path.
    strategy, history, _ = run_fake({**REC, "rounds": 1, "max_reply_mb": 1.0, "cohort": False})
    assert history[1]["rejected"] > 0 and history[1]["train_clients"] > 0
    assert history[1]["rejected"] + history[1]["train_clients"] == 25
    assert all(torch.isfinite(p).all() for p in strategy.params.values())
    assert reason in caplog.text


def test_a_reply_out_of_the_array_layout_fails_its_nodes_clients_only(monkeypatch, caplog):
    from fedsim.app import client_app

    reply_content = client_app.reply_content

    def scramble(arrays, metrics, errors, runtime):
        content = reply_content(arrays, metrics, errors, runtime)
        record = content.array_records["client-arrays"]
        if 0 in arrays and "item_ids|<i8|1|index" in record:  # the node hosting partition 0
            del record["item_ids|<i8|1|index"]
        return content

    monkeypatch.setattr(client_app, "reply_content", scramble)
    strategy, history, _ = run_fake({**REC, "rounds": 1, "nodes": 4})
    sampled = strategy.sample(1)
    hosted_with_0 = sum(1 for p in sampled if p % 4 == 0)
    assert 0 in sampled and history[1]["failures"] == hosted_with_0
    assert history[1]["train_clients"] == 25 - hosted_with_0
    assert "is not '<name>|<dtype>|<ndim>'" in caplog.text
