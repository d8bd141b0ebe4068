"""Client-side differential privacy: the mechanism, DP mode's messages, the budget, its report."""

import json
import math

import numpy as np
import pytest
import torch
from dp_accounting import GaussianDpEvent
from dp_accounting.rdp import RdpAccountant

from fedsim.privacy import GaussianMechanism, clip, epsilon
from fedsim.protocol import unpack_arrays
from fedsim.runner.experiment import run_on_grid
from fedsim.runner.results import build_summary
from fedsim.spec import SpecError, resolve
from strategies.base import PartitionedStrategy
from tests.helpers import run_fake

# Small runs: what is under test is what leaves the clients, not how well they learn; so the
# nodes reply per client (node_sums = false), and the tests read each client's upload. With node
# sums the noised uploads are summed on the node (tests/test_node_sums.py, "fedncf-dp").
TAB = {"dataset": "synthetic-tabular", "method": "fedavg", "model": "logreg",
       "partitioner": "dirichlet", "num_clients": 4, "fraction": 1.0, "rounds": 3,
       "fedavg.lr": 0.1, "fedavg.batch_size": 256, "node_sums": False}
# One client at a time (DP mode's own path): cohort mode agrees only to float tolerance.
REC = {"dataset": "synthetic-rec", "rounds": 1, "fraction": 0.05, "cohort": False,
       "node_sums": False}
NO_NOISE = {"privacy.clip_norm": 1e6, "privacy.noise_multiplier": 0.0}
DP = {"privacy.clip_norm": 1.0, "privacy.noise_multiplier": 1.0}


def _norm(arrays, names):
    return math.sqrt(sum(float(np.sum(arrays[n].astype(np.float64) ** 2)) for n in names))


def _train_uploads(grid):
    """Every training upload of the run, one dict of arrays per client."""
    return [upload for reply in grid.replies if reply.metadata.message_type == "train"
            for upload in unpack_arrays(reply.content.array_records["client-arrays"]).values()]


def test_clipping_bounds_the_norm_and_leaves_small_uploads_unchanged():
    rng = np.random.default_rng(0)
    gradient = {"w": rng.normal(size=(6, 4)).astype(np.float32),
                "b": rng.normal(size=4).astype(np.float32), "item_ids": np.arange(6)}
    norm = _norm(gradient, ["w", "b"])
    clipped = clip(gradient, 0.5)
    assert _norm(clipped, ["w", "b"]) == pytest.approx(0.5, rel=1e-5)
    np.testing.assert_allclose(clipped["w"] * (norm / 0.5), gradient["w"], rtol=1e-5)
    assert clipped["w"].dtype == np.float32
    assert clipped["item_ids"] is gradient["item_ids"]  # ids are structure, never scaled
    within = clip(gradient, norm * 1.01)
    assert all(np.array_equal(within[k], gradient[k]) for k in gradient)
    # An update is clipped around the weights received: the change shrinks, not the weights.
    received = {"w": rng.normal(size=(6, 4)).astype(np.float32),
                "b": rng.normal(size=4).astype(np.float32)}
    weights = {k: received[k] + gradient[k] for k in received}
    clipped = clip(weights, 0.5, received)
    assert _norm({k: clipped[k] - received[k] for k in received}, received) == pytest.approx(
        0.5, rel=1e-4)
    assert all(np.array_equal(clip(weights, 1e3, received)[k], weights[k]) for k in weights)
    assert np.array_equal(clip({"w": np.zeros(3, np.float32)}, 1.0)["w"], np.zeros(3))


def test_noise_has_std_noise_multiplier_times_clip_norm_seeded_by_client_and_round():
    mechanism = GaussianMechanism(clip_norm=0.5, noise_multiplier=2.0, upload="gradient", seed=3)
    zero = {"g": np.zeros((200, 500), np.float32), "item_ids": np.arange(200)}
    noised = mechanism(zero, {}, partition=7, server_round=2)["g"]
    # 100,000 draws of N(0, 1): the sample std's standard error is 0.2%, the mean's 0.003.
    assert np.std(noised) == pytest.approx(1.0, rel=0.01)
    assert abs(np.mean(noised)) < 0.015
    assert noised.dtype == np.float32
    assert np.array_equal(noised, mechanism(zero, {}, 7, 2)["g"])
    assert not np.array_equal(noised, mechanism(zero, {}, 8, 2)["g"])
    assert not np.array_equal(noised, mechanism(zero, {}, 7, 3)["g"])


@pytest.mark.slow
def test_fedavg_with_no_noise_and_a_huge_clip_equals_the_non_dp_run_exactly():
    _, plain, plain_grid = run_fake(TAB)
    _, private, private_grid = run_fake({**TAB, **NO_NOISE})
    skip = {"privacy_epsilon", "privacy_releases"}  # and the timings ("*_seconds")
    strip = lambda history: [{k: v for k, v in r.items()
                              if k not in skip and not k.endswith("_seconds")} for r in history]
    assert strip(private) == strip(plain)
    for ours, theirs in zip(_train_uploads(private_grid), _train_uploads(plain_grid),
                            strict=True):
        assert ours.keys() == theirs.keys()
        assert all(np.array_equal(ours[k], theirs[k]) for k in ours)
    assert private[-1]["privacy_epsilon"] == math.inf  # clipping only: no guarantee


def test_fedavg_dp_uploads_are_clipped_updates_plus_noise():
    _, clipped, grid = run_fake({**TAB, "rounds": 1, "privacy.clip_norm": 0.1,
                                 "privacy.noise_multiplier": 0.0})
    message = next(m for m in grid.sent if m.metadata.message_type == "train")
    received = {k: v.numpy() for k, v in message.content.array_records["arrays"].items()}
    uploads = _train_uploads(grid)
    assert len(uploads) == 4
    for upload in uploads:
        change = {k: upload[k] - received[k] for k in received}
        assert _norm(change, received) == pytest.approx(0.1, rel=1e-3)
    # With noise (multiplier 1): the same clipped uploads plus N(0, 0.1²) per coordinate.
    _, _, noisy_grid = run_fake({**TAB, "rounds": 1, "privacy.clip_norm": 0.1})
    noise = np.concatenate([(ours[k] - theirs[k]).ravel() for ours, theirs in
                            zip(_train_uploads(noisy_grid), uploads, strict=True) for k in ours])
    assert np.std(noise) == pytest.approx(0.1, rel=0.3) and (noise != 0).all()


@pytest.mark.slow
def test_dp_fedncf_sends_every_item_row_and_without_noise_trains_as_the_sparse_protocol(
        monkeypatch):
    # Evaluation is not under test and costs most of a run: skip it.
    monkeypatch.setattr(PartitionedStrategy, "configure_evaluate", lambda *args: [])
    sparse, _, _ = run_fake(REC)
    dense, _, grid = run_fake({**REC, **NO_NOISE})
    for name, value in sparse.params.items():
        assert torch.equal(dense.params[name], value), name
    num_items = len(dense.params["item_gmf.weight"])
    assert all(m.metadata.message_type != "query.rows" for m in grid.sent)
    train = [m for m in grid.sent if m.metadata.message_type == "train"]
    assert train and all(m.content.array_records["arrays"]["item_gmf.weight"].shape[0]
                         == num_items for m in train)
    rows = lambda uploads: [upload["item_gmf.weight"] for upload in uploads]
    # Without noise, the rows a client's sample did not touch are zero; with noise every row
    # is noised, so the upload no longer shows which items the client touched.
    assert all(r.shape[0] == num_items and (r == 0).all(1).any()
               for r in rows(_train_uploads(grid)))
    _, _, noisy_grid = run_fake({**REC, **DP})
    noisy = rows(_train_uploads(noisy_grid))
    assert len(noisy) == 25 and all((r != 0).all() for r in noisy)


def test_reported_epsilon_is_the_accountants_for_the_most_sampled_client():
    strategy, history, _ = run_fake({**TAB, "fraction": 0.5, "rounds": 4, **DP,
                                     "privacy.noise_multiplier": 1.5, "privacy.delta": 1e-4})
    times = np.bincount([p for r in range(1, 5) for p in strategy.sample(r)], minlength=4)
    most = int(times.max())
    reference = RdpAccountant()
    reference.compose(GaussianDpEvent(1.5), most)
    assert history[-1]["privacy_releases"] == most and most < 4  # half the clients a round
    assert history[-1]["privacy_epsilon"] == pytest.approx(reference.get_epsilon(1e-4), rel=1e-12)
    spent = [r["privacy_epsilon"] for r in history]
    assert spent[0] == 0.0 and spent == sorted(spent)


def test_epsilon_decreases_with_more_noise_and_grows_with_releases():
    by_noise = [epsilon(sigma, 20, 1e-5) for sigma in (0.5, 1.0, 2.0, 4.0)]
    assert all(a > b for a, b in zip(by_noise, by_noise[1:]))
    assert epsilon(1.0, 10, 1e-5) < epsilon(1.0, 20, 1e-5)
    assert epsilon(1.0, 0, 1e-5) == 0.0 and epsilon(0.0, 3, 1e-5) == math.inf


@pytest.mark.slow
def test_summary_reports_the_budget_and_null_without_dp(tmp_path):
    from fedsim.app.client_app import app
    from tests.fake_grid import FakeGrid

    spec = resolve({**TAB, **DP})
    summary = run_on_grid(FakeGrid(app, 4), spec, tmp_path / "dp")
    privacy = json.loads((tmp_path / "dp" / "summary.json").read_text())["privacy"]
    assert privacy == summary["privacy"]
    assert privacy["releases"] == 3  # every client, every round
    assert privacy["epsilon"] == epsilon(1.0, 3, 1e-5)
    assert privacy["epsilon_replace"] == epsilon(0.5, 3, 1e-5) > privacy["epsilon"]
    assert (privacy["clip_norm"], privacy["noise_multiplier"], privacy["delta"]) == (1.0, 1.0, 1e-5)
    assert build_summary(resolve(TAB), [{"round": 0}], "accuracy", 4, 1.0)["privacy"] is None


@pytest.mark.slow
def test_a_resumed_dp_run_keeps_the_budget_it_had_spent(tmp_path):
    from fedsim.app.client_app import app
    from tests.fake_grid import FakeGrid

    spec = resolve({**TAB, **DP, "fraction": 0.5, "rounds": 4})
    whole = run_on_grid(FakeGrid(app, 4), spec, tmp_path / "whole")
    run_on_grid(FakeGrid(app, 4), {**spec, "rounds": 2}, tmp_path / "cut")
    resumed = run_on_grid(FakeGrid(app, 4), spec, tmp_path / "cut", resume=True)
    assert resumed["privacy"] == whole["privacy"]
    assert resumed["final"]["accuracy"] == whole["final"]["accuracy"]


@pytest.mark.parametrize("overrides, words", [
    ({"privacy.noise_multiplier": -1.0}, ["privacy.noise_multiplier", "-1.0", "[0, 1e+06]"]),
    ({"privacy.clip_norm": -0.5}, ["privacy.clip_norm", "-0.5"]),
    ({"privacy.delta": 0.0}, ["privacy.delta", "(0, 0.1]"]),
    ({"method": "fedfact_post", "dataset": "adult", "model": "logreg", "partitioner": "iid",
      "num_clients": 3, "privacy.clip_norm": 1.0}, ["fedfact_post", "differential privacy",
                                               "privacy.clip_norm = 0"]),
    ({"method": "fedrecgel", "fedrecgel.item_centric": True, "privacy.clip_norm": 1.0},
     ["fedrecgel.item_centric", "privacy.clip_norm"]),
])
def test_bad_dp_specs_fail_before_any_work_naming_the_key(overrides, words):
    with pytest.raises(SpecError) as err:
        resolve(overrides)
    for word in words:
        assert word in str(err.value)
