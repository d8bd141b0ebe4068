"""Node-level partial aggregation (fedsim/node_sums.py): a node's checked sum of its clients'
replies gives the server the aggregate per-client replies give, to float tolerance, for every
sum-aggregated method and node layout; a rejected client's upload is never in a sum."""

import numpy as np
import pytest

from fedsim.node_sums import SumRule, node_sum
from tests.helpers import run_fake

REC = {"dataset": "synthetic-rec", "data.synthetic_users": 100, "rounds": 2, "fraction": 0.2,
       "eval_every": 2, "eval_full_every": 100, "cohort": False}
TAB = {"dataset": "synthetic-tabular", "method": "fedavg", "model": "logreg",
       "partitioner": "dirichlet", "num_clients": 8, "fraction": 1.0, "rounds": 2,
       "fedavg.lr": 0.1, "fedavg.batch_size": 256}
METHODS = {
    "fedavg": TAB,
    "fedncf": {**REC, "method": "fedncf"},
    "fedmf": {**REC, "method": "fedmf", "model": "mf"},
    "fedrecgel": {**REC, "method": "fedrecgel", "fedrecgel.rho_sh": 0.05, "fedrecgel.rho_ns": 0.1},
    "fedrecgel-item-centric": {**REC, "method": "fedrecgel", "fedrecgel.rho_sh": 0.05,
                               "fedrecgel.item_centric": True},
    "fedncf-dp": {**REC, "method": "fedncf", "rounds": 1, "privacy.clip_norm": 1.0,
                  "privacy.noise_multiplier": 1.0},
}


def _relative_error(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30))


def _final_model(grid) -> dict[str, np.ndarray]:
    """The arrays of the last evaluation message: the model after the last round."""
    message = [m for m in grid.sent if m.metadata.message_type == "evaluate"][-1]
    return {k: v.numpy() for k, v in message.content.array_records["arrays"].items()}


@pytest.fixture(scope="module")
def per_client():
    """Each method's run with one reply per client (bit-identical across node layouts,
    tests/test_strategies.py), the reference the node sums must reproduce."""
    return {name: run_fake({**spec, "nodes": 3, "node_sums": False})
            for name, spec in METHODS.items()}


@pytest.mark.parametrize("nodes", [1, 3, 7])
@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.slow
def test_node_sums_equal_per_client_aggregation(per_client, method, nodes):
    _, want_history, want_grid = per_client[method]
    strategy, history, grid = run_fake({**METHODS[method], "nodes": nodes})
    # The nodes did send sums: one training reply per node with sampled clients, no per-client
    # arrays in it.
    train = [r for r in grid.replies if r.metadata.message_type == "train"]
    assert train and all("sum-info" in r.content.config_records
                         and "client-arrays" not in r.content.array_records for r in train)
    assert len(train) <= nodes * METHODS[method]["rounds"]
    got, want = _final_model(grid), _final_model(want_grid)
    assert got.keys() == want.keys()
    for name in want:
        assert _relative_error(got[name], want[name]) < 1e-5, name
    for mine, theirs in zip(history, want_history, strict=True):
        assert mine.get("train_clients") == theirs.get("train_clients")
        if "train_loss" in theirs:
            assert mine["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-6)
        # Logical traffic is what a deployment sends per client: the same either way.
        for key in ("bytes_up", "bytes_down", "bytes_eval_up", "bytes_eval_down"):
            assert mine[key] == theirs[key], key
        assert mine["rejected"] == theirs["rejected"] == 0
    # The simulation moved fewer bytes up: one sum per node instead of one upload per client
    # (FedAvg's weighted sums are float64: twice a float32 model, so fewer than half as many).
    if 2 * nodes < len(strategy.sample(1)):
        assert history[-1]["physical_bytes_up"] < want_history[-1]["physical_bytes_up"]
    assert want_history[-1]["physical_bytes_up"] >= want_history[-1]["bytes_up"]


def _uploads(rng, count, num_items=30):
    shared = {"dense": np.zeros((2, 3), np.float32)}
    uploads, owns = {}, {}
    for p in range(count):
        ids = np.sort(rng.choice(num_items, size=5, replace=False)).astype(np.int64)
        owns[p] = {"ids": ids, "rows": np.zeros((5, 4), np.float32)}
        uploads[p] = {"ids": ids, "rows": rng.normal(size=(5, 4)).astype(np.float32),
                      "dense": rng.normal(size=(2, 3)).astype(np.float32)}
    return shared, owns, uploads


@pytest.mark.parametrize("corruption, reason", [
    (lambda up: {**up, "dense": up["dense"] * np.nan}, "non-finite"),
    (lambda up: {**up, "ids": np.roll(up["ids"], 1)}, "differ from the rows"),
    (lambda up: {**up, "ids": up["ids"] + 1000}, "outside the rows"),
    (lambda up: {**up, "rows": up["rows"][:, :2]}, "rows: expected"),
    (lambda up: {**up, "dense": up["dense"].astype(np.float64)}, "dense: expected"),
    (lambda up: {**up, "extra": np.ones(3, np.float32)}, "expected ['dense', 'ids', 'rows']"),
    (lambda up: {**up, "dense": np.zeros((300, 300), np.float32)}, "max_reply_bytes"),
])
def test_a_rejected_clients_upload_is_not_in_the_nodes_sum(corruption, reason):
    rng = np.random.default_rng(0)
    rule = SumRule(dense=("dense",), rows="ids", row_arrays=("rows",), max_bytes=100_000)
    shared, owns, uploads = _uploads(rng, 6)
    metrics = {p: {"train-loss": float(p)} for p in uploads}
    bad = {**uploads, 2: corruption(uploads[2]), 5: corruption(uploads[5])}
    total, rejected, uploaded = node_sum(rule, bad, metrics, shared, owns)
    assert sorted(rejected) == [2, 5] and all(reason in r for r in rejected.values()), rejected
    assert total.partitions == [0, 1, 3, 4] and total.weight == 4
    assert uploaded == sum(a.nbytes for up in bad.values() for a in up.values())
    valid = [uploads[p] for p in total.partitions]
    np.testing.assert_allclose(total.arrays["dense"], sum(u["dense"] for u in valid), rtol=1e-6)
    dense_rows = np.zeros((30, 4))
    touches = np.zeros(30, np.int64)
    for u in valid:
        dense_rows[u["ids"]] += u["rows"]
        touches[u["ids"]] += 1
    np.testing.assert_array_equal(total.ids, np.flatnonzero(touches))
    np.testing.assert_array_equal(total.touches, touches[total.ids])
    np.testing.assert_allclose(total.arrays["rows"], dense_rows[total.ids], rtol=1e-6)
    assert total.metrics == {"train-loss": 0.0 + 1 + 3 + 4}


def test_weighted_sums_give_the_weighted_mean():
    rng = np.random.default_rng(1)
    rule = SumRule(dense=("w",), weight="num-examples")
    models = {p: {"w": rng.normal(size=4).astype(np.float32)} for p in range(5)}
    metrics = {p: {"num-examples": p + 1, "train-loss": 0.5 * p} for p in range(5)}
    shared = {"w": np.zeros(4, np.float32)}
    halves = [node_sum(rule, {p: models[p] for p in part}, metrics, shared, {})[0]
              for part in ([0, 2, 4], [1, 3])]
    total = rule.add(halves)
    weights = np.arange(1, 6, dtype=np.float64)
    np.testing.assert_allclose(total.arrays["w"] / total.weight,
                               np.average([models[p]["w"] for p in range(5)], axis=0,
                                          weights=weights), rtol=1e-12)
    assert total.weight == 15 and total.partitions == [0, 1, 2, 3, 4]
    assert total.metrics["train-loss"] / total.weight == pytest.approx(
        np.average(0.5 * np.arange(5), weights=weights))
    # A client without a usable weight is rejected, not summed with a weight of 0.
    _, rejected, _ = node_sum(rule, models, {**metrics, 3: {"train-loss": 1.0}}, shared, {})
    assert list(rejected) == [3] and "num-examples" in rejected[3]


@pytest.mark.slow
def test_a_malformed_node_sum_is_rejected_with_all_its_clients(monkeypatch, caplog):
    from fedsim.app import client_app

    sum_content = client_app.sum_content

    def poison(rule, total, errors, rejected, uploaded, runtime):
        if total is not None and rule.rows and 0 in total.partitions:  # the node hosting 0
            total.arrays["head.weight"] = total.arrays["head.weight"] * np.nan
        return sum_content(rule, total, errors, rejected, uploaded, runtime)

    monkeypatch.setattr(client_app, "sum_content", poison)
    strategy, history, _ = run_fake({**METHODS["fedncf"], "rounds": 1, "nodes": 4})
    hosted_with_0 = sum(1 for p in strategy.sample(1) if p % 4 == 0)
    assert 0 in strategy.sample(1)
    assert history[1]["rejected"] == hosted_with_0
    assert history[1]["train_clients"] == 20 - hosted_with_0
    assert all(np.isfinite(p.numpy()).all() for p in strategy.params.values())
    assert "node sum: summed 'head.weight' is not a finite float array" in caplog.text


def test_metric_sums_leave_out_clients_with_arrays_or_non_finite_metrics():
    """The recommenders' evaluation: a rule without arrays sums the metric table at once."""
    metrics = {p: {"hr@10": float(p), "n": 1.0} for p in range(5)}
    metrics[3]["hr@10"] = float("nan")
    arrays = {p: {} for p in range(5)}
    arrays[1] = {"scores": np.ones(2)}
    total, rejected, uploaded = node_sum(SumRule(), arrays, metrics, {}, {})
    assert sorted(rejected) == [1, 3] and "not finite" in rejected[3], rejected
    assert total.partitions == [0, 2, 4] and total.weight == 3 and uploaded == 16
    assert total.metrics == {"hr@10": 6.0, "n": 3.0}
    assert node_sum(SumRule(), {0: {}}, {0: {"n": float("inf")}}, {}, {})[0] is None
