"""summary.json selection rules and the files a run leaves."""

import json
import math

from fedsim.runner.results import RunRecorder, build_summary
from fedsim.spec import resolve

SPEC = resolve({"rounds": 3})
HISTORY = [
    {"round": 0, "hr@10": 0.9, "val_hr@10": 0.9, "bytes_up": 0, "bytes_down": 10},
    {"round": 1, "hr@10": 0.3, "val_hr@10": 0.5, "failures": 1, "bytes_up": 5, "bytes_down": 20},
    {"round": 2, "hr@10": 0.6, "val_hr@10": 0.4, "bytes_up": 9, "bytes_down": 30},
    {"round": 3, "hr@10": 0.5, "val_hr@10": float("nan"), "bytes_up": 12, "bytes_down": 40,
     "bytes_eval_up": 3, "bytes_eval_down": 50},
]


def test_best_rounds_are_selected_on_test_and_on_validation_after_round_zero():
    summary = build_summary(SPEC, HISTORY, "hr@10", num_clients=7, wall_seconds=1.0)
    assert summary["best_test"]["round"] == 2  # round 0 (the initial model) never counts
    assert summary["best_test"]["metrics"]["hr@10"] == 0.6
    assert summary["best_val"]["round"] == 1 and summary["best_val"]["selected_on"] == "val_hr@10"
    assert summary["final"]["hr@10"] == 0.5
    assert (summary["bytes_up"], summary["bytes_down"], summary["failures"]) == (12, 40, 1)
    # the same names as in metrics.jsonl
    assert (summary["bytes_eval_up"], summary["bytes_eval_down"]) == (3, 50)
    assert summary["num_clients"] == 7 and summary["spec"] == SPEC


def test_no_validation_split_gives_null_best_val():
    history = [{k: v for k, v in r.items() if not k.startswith("val_")} for r in HISTORY]
    assert build_summary(SPEC, history, "hr@10", 7, 1.0)["best_val"] is None


def test_recorder_writes_valid_json_files_with_nan_as_null(tmp_path):
    recorder = RunRecorder(tmp_path, SPEC, "hr@10")
    for record in HISTORY:
        recorder.on_round(record)
    recorder.finish(num_clients=7)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").open()]
    assert [r["round"] for r in lines] == [0, 1, 2, 3]
    assert lines[3]["val_hr@10"] is None
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["schema_version"] == 1 and summary["best_test"]["round"] == 2
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert not any(isinstance(v, float) and math.isnan(v) for v in summary["final"].values())


def test_last_rounds_mean_leaves_out_round_zero_and_missing_values():
    history = [{"round": r, "hr@10": r / 100, **({"hr@10_full": 1.0} if r % 5 == 0 else {})}
               for r in range(0, 16)]
    last = build_summary(SPEC, history, "hr@10", 7, 1.0)["last10_test"]
    assert last["rounds"] == [6, 15] and last["selected_on"] == "mean over the last 10 evaluated rounds"
    assert math.isclose(last["metrics"]["hr@10"], sum(range(6, 16)) / 1000)
    assert last["metrics"]["hr@10_full"] == 1.0  # rounds 10 and 15 only
    short = build_summary(SPEC, HISTORY, "hr@10", 7, 1.0)["last10_test"]
    assert short["rounds"] == [1, 3] and math.isclose(short["metrics"]["hr@10"], (0.3 + 0.6 + 0.5) / 3)
    assert math.isclose(short["metrics"]["val_hr@10"], 0.45)  # the NaN of round 3 left out


def test_noise_floor_pairs_each_final_gap_with_its_floor():
    spec = resolve({"dataset": "adult", "method": "fedavg", "model": "logreg",
                    "partitioner": "iid", "num_clients": 2})
    history = [{"round": 0, "accuracy": 0.7, "dp_global": 0.2, "dp_global_floor": 0.01},
               {"round": 1, "accuracy": 0.8, "dp_global": 0.05, "dp_global_floor": 0.02,
                "dp_local_max": 0.3, "dp_local_max_floor": 0.25}]
    summary = build_summary(spec, history, "accuracy", num_clients=2, wall_seconds=1.0)
    assert summary["noise_floor"] == {"dp_global": {"value": 0.05, "floor": 0.02},
                                      "dp_local_max": {"value": 0.3, "floor": 0.25}}
    assert build_summary(SPEC, HISTORY, "hr@10", 7, 1.0)["noise_floor"] is None


def test_every_figure_of_the_summary_has_its_round_and_rule():
    summary = build_summary(SPEC, HISTORY, "hr@10", 7, 1.0)
    assert summary["final_round"] == 3
    assert summary["best_test"]["rule"] == "highest hr@10 of the rounds after round 0"
    assert (summary["trained_rounds"], summary["skipped_rounds"]) == (3, 0)


FAIR = resolve({"dataset": "adult", "method": "fedfact_post", "model": "logreg",
                "partitioner": "iid", "num_clients": 5, "rounds": 5,
                "fedfact.pretrain_rounds": 2, "fedfact.variant": "g"})


def fair_round(number: int, accuracy: float, gap: float, floor: float = 0.0) -> dict:
    return {"round": number, "accuracy": accuracy, "dp_pop_global": gap,
            "dp_pop_global_floor": floor, "dp_global": 2 * gap}


def test_a_fairness_run_selects_among_rounds_that_meet_its_constraints():
    history = [fair_round(0, 0.70, 0.20), fair_round(1, 0.83, 0.18),
               fair_round(2, 0.84, 0.18),  # the best accuracy: the unfair FedAvg pretraining
               fair_round(3, 0.80, 0.05), fair_round(4, 0.79, 0.012, floor=0.004),
               fair_round(5, 0.78, 0.009)]
    best = build_summary(FAIR, history, "accuracy", 5, 1.0)["best_test"]
    assert best["round"] == 4  # 0.012 <= xi 0.01 + its noise floor 0.004; round 3 is not fair
    assert best["rule"] == ("highest accuracy of the rounds >= 3 meeting dp_pop_global <= 0.01 "
                            "+ dp_pop_global_floor")
    unfair = [fair_round(r, 0.8 + r / 100, 0.2) for r in range(6)]
    best = build_summary(FAIR, unfair, "accuracy", 5, 1.0)["best_test"]
    assert best["round"] == 5 and best["rule"].startswith("final round: none of the rounds >= 3")
    # gl: the local constraint counts too (the worst client's gap).
    both = {**FAIR, "fedfact.variant": "gl"}
    history[4]["dp_pop_local_max"], history[5]["dp_pop_local_max"] = 0.5, 0.005
    assert build_summary(both, history, "accuracy", 5, 1.0)["best_test"]["round"] == 5
    # FairFed states no bound: its final round, saying so.
    fairfed = build_summary({**FAIR, "method": "fairfed"}, history, "accuracy", 5, 1.0)
    assert fairfed["best_test"]["round"] == 5 and "no fairness bound" in \
        fairfed["best_test"]["rule"]


def test_curves_draw_each_metric_once():
    from fedsim.runner.results import curve_keys

    history = [{"round": 0, "accuracy": 0.5, "dp_global": 0.1, "train_loss": 1.0}]
    assert curve_keys("accuracy", history) == ["accuracy", "dp_global", "train_loss"]
