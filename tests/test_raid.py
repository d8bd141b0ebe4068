"""RAID (fedsim/centralized/raid.py): beta = 0 is the undefended MF, one transport refresh
equalises the classes, the penalty defeats the attacker, and the audit sees what RAID
releases. Runs go through the single-client pipeline on the in-process grid."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fedsim.app.client_app import app as client_app
from fedsim.audit import audit_run
from fedsim.centralized.raid import RAIDTrainer
from fedsim.data import load_dataset
from fedsim.federation import load_federation
from fedsim.metrics.attribute_inference import attack
from fedsim.runner.checkpoint import load_checkpoint
from fedsim.runner.experiment import run_on_grid
from fedsim.spec import resolve
from tests.fake_grid import FakeGrid

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPEC = {"method": "raid", "model": "mf", "dataset": "synthetic-rec", "partitioner": "single",
        "fraction": 1.0, "nodes": 1, "rounds": 3, "central.dim": 16, "central.lr": 0.01,
        "central.batch_size": 1024, "raid.warmup": 1, "raid.refresh": 1, "raid.support": 32,
        "raid.attack_seeds": 1, "eval_every": 3}


def run(tmp_path, name: str, **overrides) -> tuple[dict, list[dict]]:
    """(final model arrays, per-round records without timings) of a fake-grid run."""
    out = tmp_path / name
    run_on_grid(FakeGrid(client_app, 1), resolve({**SPEC, **overrides}), out)
    arrays = {k: v.numpy() for k, v in load_checkpoint(out)["arrays"].items()}
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return arrays, [{k: v for k, v in r.items() if not k.endswith("_seconds")} for r in records]


@pytest.mark.slow
def test_beta_zero_is_the_undefended_run_bit_for_bit(tmp_path):
    """beta = 0 with phase 2 from epoch 2 on equals a run that never leaves phase 1; the same
    schedule with beta = 5 is defended: its users' class means, relative to the spread of the
    embeddings, are far closer together (so the equality is not that of two runs in which the
    penalty does nothing)."""
    zero = run(tmp_path, "zero", **{"raid.beta": 0.0})
    undefended = run(tmp_path, "phase1", **{"raid.beta": 5.0, "raid.warmup": 3})
    defended = run(tmp_path, "defended", **{"raid.beta": 5.0})
    for name, array in zero[0].items():
        assert np.array_equal(array, undefended[0][name]), name
    assert zero[1] == undefended[1]
    assert not np.array_equal(zero[0]["user.weight"], defended[0]["user.weight"])
    spec = resolve(SPEC)
    federation = load_federation(spec)
    classes = federation.dataset.user_attributes[spec["raid.attribute"]][federation.train_parts[0]]
    # Measured: 0.31 undefended, 0.022 defended (0.30 with the penalty term zeroed).
    assert relative_class_gap(defended[0]["user.weight"], classes) < \
        relative_class_gap(zero[0]["user.weight"], classes) / 3


def leaked_trainer(**overrides) -> tuple[RAIDTrainer, torch.nn.Module, np.ndarray]:
    """A trainer on synthetic-rec whose model's user embeddings leak gender by a class shift."""
    spec = resolve({**SPEC, "raid.support": 64, "raid.beta": 50.0, **overrides})
    data = load_dataset("synthetic-rec")
    trainer = RAIDTrainer(spec, data, np.arange(data.num_users))
    torch.manual_seed(0)
    model = trainer.build_model()
    rng = np.random.default_rng(0)
    leaked = rng.normal(size=(data.num_users, 16)) + 2.0 * trainer.classes[:, None]
    with torch.no_grad():
        model.user.weight.copy_(torch.from_numpy(leaked))
    return trainer, model, leaked


def class_gap(embeddings: np.ndarray, classes: np.ndarray) -> float:
    means = [embeddings[classes == k].mean(0) for k in (0, 1)]
    return float(np.linalg.norm(means[0] - means[1]))


def relative_class_gap(embeddings: np.ndarray, classes: np.ndarray) -> float:
    """The class-mean gap over the root mean square distance of the rows to their mean."""
    spread = np.sqrt(np.mean(np.sum((embeddings - embeddings.mean(0)) ** 2, axis=1)))
    return class_gap(embeddings, classes) / float(spread)


def test_one_refresh_equalises_class_means_and_defeats_the_attack():
    trainer, model, leaked = leaked_trainer()
    trainer.begin_epoch(2, {})  # the first phase-2 epoch (warmup 1)
    assert trainer.defended() and trainer.refresh_due()
    trainer.refresh(model, np.random.default_rng(1))
    targets, classes = trainer.targets, trainer.classes
    assert class_gap(leaked, classes) > 7  # 2 in each of 16 dimensions: 8
    assert class_gap(targets, classes) < 1e-5
    before, after = attack(leaked, classes, seeds=2), attack(targets, classes, seeds=2)
    assert before["mlp_auc"] > 0.99
    assert after["mlp_auc"] < 0.65 and after["logreg_auc"] < 0.65


def test_penalty_moves_the_released_embeddings_to_the_targets():
    """Four phase-2 epochs from the leaked start (Adam's steps bound how fast rows move: lr
    0.05 here): the class means meet and the attack on the model's own embeddings falls to
    chance while the BCE keeps training."""
    trainer, model, leaked = leaked_trainer(**{"central.lr": 0.05})
    optimizer = trainer.make_optimizer(model)
    private = {}
    for epoch in (2, 3, 4, 5):
        trainer.begin_epoch(epoch, private)
        trainer.train_epoch(model, optimizer, np.random.default_rng(epoch))
        private = trainer.private_state()
    released = trainer.user_embeddings(model)
    assert class_gap(released, trainer.classes) < class_gap(leaked, trainer.classes) / 10
    assert attack(released, trainer.classes, seeds=2)["mlp_auc"] < 0.65


@pytest.mark.slow
def test_noise_baseline_and_audit_see_the_same_released_embeddings(tmp_path):
    """The final evaluation's attack scores and `fedsim audit` on the run agree exactly, noise
    included; the noise changes the ranking metrics but not the training."""
    noisy = run(tmp_path, "noisy", **{"raid.beta": 0.0, "raid.noise": 1.0})
    clean = run(tmp_path, "clean", **{"raid.beta": 0.0})
    assert all(np.array_equal(noisy[0][k], clean[0][k]) for k in clean[0])
    assert noisy[1][-1]["ndcg@10_full"] != clean[1][-1]["ndcg@10_full"]
    report = audit_run(tmp_path / "noisy", ["gender"], seeds=1)
    assert report["from"] == "checkpoint" and report["users"] == 500
    for score in ("mlp_auc", "mlp_f1", "logreg_bacc"):
        assert report["attributes"]["gender"][score] == pytest.approx(
            noisy[1][-1][f"attack_{score}"], abs=1e-12)
    assert (tmp_path / "noisy" / "audit.json").is_file()


def test_unknown_attribute_is_named():
    with pytest.raises(ValueError, match="raid.attribute = 'age_30'.*synthetic-rec"):
        leaked_trainer(**{"raid.attribute": "age_30"})
