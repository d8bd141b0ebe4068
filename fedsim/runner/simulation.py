"""Run a spec as a Flower simulation on Ray (``flwr.simulation.run_simulation``).

``run_simulation`` gives the apps an empty run config, so the spec reaches the ServerApp through
a closure and the clients through the messages (see fedsim/app/client_app.py). Data and
partitions are loaded once before Ray starts, so bad input fails in a second, not after Ray's
start-up.

Flower 1.41 marks ``run_simulation`` deprecated and prints so at every call; its supported path
is ``flwr run`` (a SuperLink process, the app packaged as a FAB, a separate simulation process),
which fedsim also supports (README). Measured side by side on a 2-round synthetic spec,
``flwr run`` took longer from the command to the results (benchmarks/README.md, "run_simulation
or flwr run"), so ``fedsim run`` keeps the in-process ``run_simulation`` and drops that one
notice from Flower's log (:class:`_RunSimulationNotice`); every other Flower warning still shows.

Ray: with ``ray.address`` (or RAY_ADDRESS) set, Flower's backend attaches to that cluster and
resource totals come from the cluster (Ray refuses num_cpus when attaching); otherwise a new
local Ray instance is started with all CPUs of this machine and one actor per
``ray.client_cpus``, even if a cluster started with ``ray start`` runs on the machine.

Polling: the simulation engine of flwr 1.41 passes messages by polling its in-memory link state
every 0.1 s twice per exchange (the engine's thread that hands the server's instructions to the
nodes, and the grid that waits for their replies). A FedNCF/FedRecGEL round is three exchanges
(row requests, training, evaluation), so the waits added 0.1-0.3 s to rounds that compute for
about a second (benchmarks/README.md, issue 16). Both poll every :data:`POLL_SECONDS` here: the
grid through its ``pull_interval``, the engine's thread through :func:`_faster_handoff`, a copy
of Flower's loop with the shorter wait (tests/test_ray_simulation.py pins the original). A poll
is one look into the in-memory state.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedsim.federation import load_federation
from fedsim.protocol import nodes_for
from fedsim.runner.experiment import default_out_dir, prepare_out_dir, run_on_grid
from fedsim.runner.results import require_tensorboard


POLL_SECONDS = 0.005
ACTOR_RESTARTS = 3


@contextlib.contextmanager
def _faster_handoff():
    """Flower's ``add_messages_to_queue`` (flwr 1.41, ``vce_api``), waiting POLL_SECONDS
    between looks instead of 0.1 s, while the block runs (the module docstring says why)."""
    from flwr.server.superlink.fleet.vce import vce_api

    def add_messages_to_queue(state, queue, nodes_mapping, f_stop) -> None:
        while not f_stop.is_set():
            for node_id in nodes_mapping.keys():
                for message in state.get_message_ins(node_id=node_id, limit=1):
                    queue.put(message)
            f_stop.wait(POLL_SECONDS)

    original = vce_api.add_messages_to_queue
    vce_api.add_messages_to_queue = add_messages_to_queue
    try:
        yield
    finally:
        vce_api.add_messages_to_queue = original


class _RunSimulationNotice(logging.Filter):
    """Drops Flower's deprecation notice of ``run_simulation`` (the module docstring says why)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (str(record.msg).startswith("DEPRECATED FEATURE")
                    and "run_simulation" in str(record.args))


def backend_config(spec: Mapping[str, Any]) -> dict[str, Any]:
    init_args: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": True}
    address = spec["ray.address"] or os.environ.get("RAY_ADDRESS", "")
    if address:
        init_args["address"] = address
    else:
        # "local": a new instance even where `ray start` left a cluster's address for a plain
        # ray.init() to find (RAY_TMPDIR/ray, /tmp/ray by default): attaching to it by accident
        # crashed the run, as Ray refuses num_cpus when attaching.
        init_args.update(address="local", num_cpus=os.cpu_count() or 1)
    # Flower passes client_resources to Ray as the actors' options, so an actor whose process
    # dies (killed for memory, a crash in native code) is started again, up to ACTOR_RESTARTS
    # times: only the message it was serving fails. Without a restart its share of the nodes
    # failed in every later round (a synthetic run that lost one of two actors in round 2
    # counted 1,230 client failures in 4 rounds, against 14 with restarts).
    return {"client_resources": {"num_cpus": spec["ray.client_cpus"], "num_gpus": 0.0,
                                 "max_restarts": ACTOR_RESTARTS},
            "init_args": init_args}


def simulate(spec: Mapping[str, Any], out_dir: str | Path | None = None,
             on_record: Callable[[dict[str, Any]], None] | None = None, resume: bool = False,
             overwrite: bool = False) -> tuple[dict[str, Any], Path]:
    """Run `spec` to the end (with `resume`, from the checkpoint in `out_dir`); return its
    summary and the directory holding the results. A new run needs an absent or empty folder;
    `overwrite` deletes a previous run's files there first
    (:func:`~fedsim.runner.experiment.prepare_out_dir`)."""
    from flwr.simulation import run_simulation

    from fedsim.app.client_app import app as client_app

    federation = load_federation(spec)
    out = Path(out_dir or spec["out_dir"] or default_out_dir(spec)).resolve()
    if spec["tensorboard"]:
        require_tensorboard()
    # Before Ray starts: nothing to resume, or a folder holding results, fails in a second.
    prepare_out_dir(out, resume, overwrite)
    summary: dict[str, Any] = {}
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        grid.pull_interval = POLL_SECONDS
        summary.update(run_on_grid(grid, spec, out, on_record, resume))

    flwr_log = logging.getLogger("flwr")
    flwr_log.setLevel(logging.WARNING)
    notice = _RunSimulationNotice()
    flwr_log.addFilter(notice)
    try:
        with warnings.catch_warnings(), _faster_handoff():
            warnings.simplefilter("ignore", DeprecationWarning)
            run_simulation(server_app=server_app, client_app=client_app,
                           num_supernodes=nodes_for(spec, federation.num_clients),
                           backend_config=backend_config(spec))
    finally:
        flwr_log.removeFilter(notice)
    if not summary:
        raise RuntimeError(f"the simulation ended without a summary; partial results in {out}")
    return summary, out
