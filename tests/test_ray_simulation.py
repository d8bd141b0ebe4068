"""One real Flower simulation on Ray: `fedsim run`'s engine, its files, and runtime-independence."""

import json
import os

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


def test_the_polling_fedsim_shortens_is_flowers():
    """`simulate` shortens Flower's two 0.1 s polls (fedsim/runner/simulation.py): the grid's
    ``pull_interval`` and the engine's hand-off loop, replaced by a copy with a shorter wait.
    A Flower that renamed either, or changed the loop, would keep its own polling silently (or
    lose a change of its loop): this fails first."""
    import inspect

    from flwr.server.superlink.fleet.vce import vce_api
    from flwr.superlink.grid.inmemory_grid import InMemoryGrid

    from fedsim.runner import simulation

    assert "time.sleep(self.pull_interval)" in inspect.getsource(InMemoryGrid.send_and_receive)
    assert "grid.pull_interval = POLL_SECONDS" in inspect.getsource(simulation.simulate)
    assert "_faster_handoff()" in inspect.getsource(simulation.simulate)
    flowers = inspect.getsource(vce_api.add_messages_to_queue)
    assert "state.get_message_ins(node_id=node_id, limit=1)" in flowers
    assert "queue.put(msg)" in flowers and "f_stop.wait(0.1)" in flowers
    assert len([line for line in flowers.splitlines() if line.strip()]) == 13
    with simulation._faster_handoff():
        handoff = vce_api.add_messages_to_queue
    assert inspect.getsource(vce_api.add_messages_to_queue) == flowers  # restored

    # The copy hands every node's pending instruction to the queue, as Flower's loop does.
    import queue
    import threading

    class State:
        pending = {7: ["to node 7"], 9: ["to node 9"]}

        def get_message_ins(self, node_id, limit):
            taken, self.pending[node_id] = self.pending[node_id][:limit], []
            return taken

    handed, stop = queue.Queue(), threading.Event()
    thread = threading.Thread(target=handoff, args=(State(), handed, {7: 0, 9: 1}, stop),
                              daemon=True)
    thread.start()
    try:
        got = sorted(handed.get(timeout=5) for _ in range(2))
    finally:
        stop.set()
        thread.join(timeout=5)
    assert got == ["to node 7", "to node 9"] and not thread.is_alive()
    assert 0 < simulation.POLL_SECONDS < 0.1


# Started in every Ray worker through PYTHONPATH (Python imports the first sitecustomize on its
# path at start-up): the node hosting partition 0 kills its actor's process while serving round
# 2's training, once (a file marks that it happened).
_CRASH_ONCE = '''
import builtins, os, sys
_import, _done = builtins.__import__, []

def _patch(module):
    serve = module._for_each_client
    def crashing(msg, context, *args, **kwargs):
        config = msg.content.config_records.get("config", {})
        marker = os.environ["FEDSIM_TEST_CRASH_MARKER"]
        if (msg.metadata.message_type == "train" and int(config.get("server-round", 0)) == 2
                and int(context.node_config["partition-id"]) == 0 and not os.path.exists(marker)):
            open(marker, "w").close()
            os._exit(1)
        return serve(msg, context, *args, **kwargs)
    module._for_each_client = crashing

def _watch(name, *args, **kwargs):
    imported = _import(name, *args, **kwargs)
    module = sys.modules.get("fedsim.app.client_app")
    if not _done and module is not None and hasattr(module, "evaluate"):
        _done.append(True)
        _patch(module)
    return imported

builtins.__import__ = _watch
'''


def test_an_actor_that_dies_is_started_again(tmp_path, monkeypatch):
    """An actor's process killed in round 2 costs that round's message of its node only: the
    actor is started again (ACTOR_RESTARTS), and the later rounds have no failures."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_CRASH_ONCE)
    marker = tmp_path / "crashed"
    monkeypatch.setenv("FEDSIM_TEST_CRASH_MARKER", str(marker))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [
        str(hook), os.environ.get("PYTHONPATH", "")])))
    overrides = {"dataset": "synthetic-rec", "rounds": 4, "fraction": 0.05, "nodes": 2}
    simulate(resolve(overrides), out_dir=tmp_path / "run")
    assert marker.exists()  # the actor did die
    failures = {record["round"]: record["failures"] for record in map(
        json.loads, (tmp_path / "run" / "metrics.jsonl").open())}
    assert failures[2] > 0 and failures[3] == failures[4] == 0, failures
