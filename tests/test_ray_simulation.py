"""One real Flower simulation on Ray: `fedsim run`'s engine, its files, and runtime-independence."""

import json

import pytest

from fedsim.runner.results import build_summary
from fedsim.runner.simulation import simulate
from fedsim.spec import resolve
from tests.helpers import run_fake

pytestmark = pytest.mark.slow  # starts Ray


def test_ray_simulation_writes_results_and_matches_the_in_process_run(tmp_path):
    overrides = {"dataset": "synthetic-rec", "rounds": 2, "fraction": 0.05, "nodes": 4,
                 "eval_every": 2}
    summary, out = simulate(resolve(overrides), out_dir=tmp_path)
    assert out == tmp_path.resolve()

    for name in ("config.toml", "metrics.jsonl", "summary.json", "curves.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["method"] == "fedncf" and written["num_clients"] == 500
    assert written["rounds"] == 2 and written["best_test"]["round"] in (1, 2)
    rounds = [json.loads(line)["round"] for line in (tmp_path / "metrics.jsonl").open()]
    assert rounds == [0, 1, 2]

    # The same spec on the in-process grid gives the same summary: two Ray actors, node ids
    # and scheduling order do not change the results (only the timings differ).
    _, history, _ = run_fake({**overrides, "out_dir": str(tmp_path)})
    timing = {"wall_seconds", "round_seconds"}
    expected = build_summary(resolve({**overrides, "out_dir": str(tmp_path)}), history,
                             "hr@10", num_clients=500, wall_seconds=0.0)
    assert {k: v for k, v in written.items() if k not in timing} == \
        {k: v for k, v in json.loads(json.dumps(expected)).items() if k not in timing}


def test_the_reply_poll_setting_is_the_one_flowers_grid_reads():
    """`simulate` sets ``pull_interval`` on Flower's in-process grid (REPLY_POLL_SECONDS); a
    renamed attribute would leave the 0.1 s default in place without an error."""
    import inspect

    from flwr.superlink.grid.inmemory_grid import InMemoryGrid

    from fedsim.runner import simulation

    assert "time.sleep(self.pull_interval)" in inspect.getsource(InMemoryGrid.send_and_receive)
    assert "grid.pull_interval = REPLY_POLL_SECONDS" in inspect.getsource(simulation.simulate)
    assert 0 < simulation.REPLY_POLL_SECONDS < 0.1
