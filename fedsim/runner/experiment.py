"""One experiment on a Flower grid: the body of every ServerApp fedsim builds.

The same function serves ``fedsim run`` (Python ``run_simulation``), ``flwr run`` (the
ServerApp reads the spec from its run config) and the Flower deployment runtime. It writes the
results as the run goes and a checkpoint after every round; with ``resume`` it continues from
the checkpoint in `out_dir`.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Mapping

from flwr.serverapp import Grid

from fedsim.federation import load_federation
from fedsim.methods import METHODS
from fedsim.runner.checkpoint import load_checkpoint, save_checkpoint
from fedsim.runner.results import RunRecorder


def default_out_dir(spec: Mapping[str, Any]) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{spec['method']}-{spec['dataset']}-{stamp}"


def run_on_grid(grid: Grid, spec: Mapping[str, Any], out_dir: Path,
                on_record: Callable[[dict[str, Any]], None] | None = None,
                resume: bool = False) -> dict[str, Any]:
    """Run the spec's method to round ``rounds`` on `grid`; write results; return the summary."""
    out_dir = Path(out_dir).resolve()
    # Clients derive their private-state store from out_dir: send it as an absolute path.
    spec = {**spec, "out_dir": str(out_dir)}
    method = METHODS[spec["method"]]
    federation = load_federation(spec)
    checkpoint = load_checkpoint(out_dir) if resume else None
    run_id = checkpoint["run_id"] if checkpoint else uuid.uuid4().hex
    recorder = RunRecorder(out_dir, spec, method.headline, on_record,
                           resume_round=checkpoint["round"] if checkpoint else None)
    strategy = method.build(spec, federation, {"run_id": run_id, "on_round": recorder.on_round})
    strategy.on_checkpoint = lambda server_round, arrays: save_checkpoint(
        out_dir, server_round, run_id, arrays, strategy.state_dict())
    if checkpoint:
        strategy.load_state_dict(checkpoint["strategy"])
        strategy.start(grid, checkpoint["arrays"], num_rounds=spec["rounds"],
                       start_round=checkpoint["round"])
    else:
        strategy.start(grid, method.initial_arrays(spec, federation), num_rounds=spec["rounds"])
    return recorder.finish(federation.num_clients)
