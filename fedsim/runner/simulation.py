"""Run a spec as a Flower simulation on Ray (``flwr.simulation.run_simulation``).

``run_simulation`` gives the apps an empty run config, so the spec reaches the ServerApp through
a closure and the clients through the messages (see fedsim/app/client_app.py). Data and
partitions are loaded once before Ray starts, so bad input fails in a second, not after Ray's
start-up.

Ray: with ``ray.address`` (or RAY_ADDRESS) set, Flower's backend attaches to that cluster and
resource totals come from the cluster (Ray refuses num_cpus when attaching); otherwise a local
Ray instance is started with all CPUs of this machine and one actor per ``ray.client_cpus``.
"""

from __future__ import annotations

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


def backend_config(spec: Mapping[str, Any]) -> dict[str, Any]:
    init_args: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": True}
    address = spec["ray.address"] or os.environ.get("RAY_ADDRESS", "")
    if address:
        init_args["address"] = address
    else:
        init_args["num_cpus"] = os.cpu_count() or 1
    return {"client_resources": {"num_cpus": spec["ray.client_cpus"], "num_gpus": 0.0},
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
        summary.update(run_on_grid(grid, spec, out, on_record, resume))

    logging.getLogger("flwr").setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # run_simulation is deprecated in 1.4x
        run_simulation(server_app=server_app, client_app=client_app,
                       num_supernodes=nodes_for(spec, federation.num_clients), backend_config=backend_config(spec))
    if not summary:
        raise RuntimeError(f"the simulation ended without a summary; partial results in {out}")
    return summary, out
