"""FedAvg and FedFACT post-processing on a 3-class, 3-group task (Adult hours by race).

The evaluation metrics of the FedAvg stage are recomputed here by hand from the model's
predictions on every client's test rows (pairwise gaps, max over 3 classes and the groups a
client holds), and the calibrated classifier must cut the multi-class DP gap. The server's λ
takes the scaled step (``fedfact.dual_step``): with the plain step the 4.6% race group makes
the dual iteration diverge (see strategies/fedfact.py and the fedfact-multiclass table).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedsim.federation import load_federation
from fedsim.spec import resolve
from tests.helpers import private_arrays, run_fake

pytestmark = pytest.mark.slow  # FedAvg then FedFACT on Adult, 3 classes

PRETRAIN = 3
SPEC = {"method": "fedfact_post", "dataset": "adult-hours", "model": "logreg",
        "partitioner": "dirichlet", "num_clients": 5, "fraction": 1.0, "rounds": PRETRAIN + 4,
        "eval_every": PRETRAIN, "fedavg.lr": 0.01, "fedavg.batch_size": 512,
        "fedfact.pretrain_rounds": PRETRAIN, "fedfact.xi_global": 0.0,
        "fedfact.xi_local": 0.0, "fedfact.dual_step": "scaled"}


def pairwise_gap(rates: list[np.ndarray]) -> float:
    """Max over classes of (max − min over groups) of per-group rate vectors."""
    stacked = np.array(rates)
    return float((stacked.max(0) - stacked.min(0)).max())


def hand_gaps(y: np.ndarray, predicted: np.ndarray, groups: np.ndarray) -> dict[str, float]:
    """Accuracy, DP (selection rates) and EOP (per-class TPR) over the groups present."""
    present = [a for a in range(3) if (groups == a).any()]
    selection = [np.bincount(predicted[groups == a], minlength=3) / (groups == a).sum()
                 for a in present]
    tpr = [np.array([np.mean(predicted[(groups == a) & (y == c)] == c) for c in range(3)])
           for a in present if all(((groups == a) & (y == c)).any() for c in range(3))]
    return {"accuracy": float(np.mean(predicted == y)), "dp": pairwise_gap(selection),
            "eop": pairwise_gap(tpr) if len(tpr) > 1 else 0.0}


def test_fedavg_metrics_and_fedfact_post_on_three_classes_and_three_groups(data_dir):
    spec = {**SPEC, "data_dir": str(data_dir)}
    strategy, history, grid = run_fake(spec)
    federation = load_federation(resolve(spec))
    data = federation.dataset
    assert (data.num_classes, data.num_groups) == (3, 3)
    assert strategy.lam.shape == (2, 3 * 3)  # one pair per (group, class)
    mus = [arrays["mu"] for arrays in private_arrays(strategy).values()]
    assert len(mus) == 5 and all(mu.shape == (2, 9) and mu.any() for mu in mus)

    # The FedAvg stage's metrics, by hand from the frozen model (sent with every dual round).
    shared = [m for m in grid.sent if m.metadata.message_type == "train"][-1]
    model = {k: torch.tensor(v.numpy()) for k, v in shared.content.array_records["arrays"].items()
             if not k.startswith("fedfact.")}
    logits = torch.nn.functional.linear(torch.tensor(data.x_test), model["0.weight"],
                                        model["0.bias"])
    predicted = logits.argmax(1).numpy()
    pooled = hand_gaps(data.y_test, predicted, data.s_test)
    local = [hand_gaps(data.y_test[rows], predicted[rows], data.s_test[rows])
             for rows in federation.test_parts]
    fedavg = history[PRETRAIN]
    assert fedavg["accuracy"] == pytest.approx(pooled["accuracy"], abs=1e-12)
    assert fedavg["dp_global"] == pytest.approx(pooled["dp"], abs=1e-12)
    assert fedavg["eop_global"] == pytest.approx(pooled["eop"], abs=1e-12)
    assert fedavg["dp_local_max"] == pytest.approx(max(g["dp"] for g in local), abs=1e-12)
    assert fedavg["accuracy"] > 0.5  # 3 classes; the largest holds 47% of the rows

    # The calibrated classifiers cut the pooled multi-class DP gap at little accuracy.
    fair = history[-1]
    assert fedavg["dp_global"] > 0.1
    assert fair["dp_global"] < 0.35 * fedavg["dp_global"]
    assert fair["accuracy"] > fedavg["accuracy"] - 0.02
