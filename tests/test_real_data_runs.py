"""Short runs on the real datasets (in-process grid, no Ray): the pipeline learns on real data."""

import pytest

from tests.helpers import run_fake


@pytest.mark.slow
def test_fedncf_on_filmtrust_improves_hit_rate_over_round_zero(data_dir):
    _, history, _ = run_fake({"dataset": "filmtrust", "data_dir": str(data_dir), "rounds": 3,
                              "eval_every": 3})
    assert [r["round"] for r in history if "hr@10" in r] == [0, 3]
    assert history[-1]["train_clients"] == 122  # 10% of 1,227 users, as the authors sample
    assert history[-1]["hr@10"] > history[0]["hr@10"] + 0.2
    assert history[-1]["val_hr@10"] > history[0]["val_hr@10"] + 0.2


def test_fedavg_on_adult_reports_accuracy_and_demographic_parity(data_dir):
    _, history, _ = run_fake({"method": "fedavg", "dataset": "adult", "model": "logreg",
                              "partitioner": "dirichlet", "num_clients": 5, "fraction": 1.0,
                              "rounds": 2, "data_dir": str(data_dir), "fedavg.lr": 0.005,
                              "fedavg.batch_size": 256})
    final = history[-1]
    assert final["accuracy"] > 0.8
    # Income predictions differ by sex on Adult: a plain model has a clear DP gap.
    assert 0.05 < final["dp_global"] < 0.5
    assert final["dp_local_max"] >= final["dp_local_mean"] > 0.0
