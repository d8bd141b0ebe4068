"""One experiment on a Flower grid: the body of every ServerApp fedsim builds.

The same function serves ``fedsim run`` (Python ``run_simulation``), ``flwr run`` (the
ServerApp reads the spec from its run config) and the Flower deployment runtime.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Mapping

from flwr.serverapp import Grid

from fedsim.federation import load_federation
from fedsim.methods import METHODS
from fedsim.runner.results import RunRecorder


def default_out_dir(spec: Mapping[str, Any]) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{spec['method']}-{spec['dataset']}-{stamp}"


def run_on_grid(grid: Grid, spec: Mapping[str, Any], out_dir: Path,
                on_record: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run the spec's method for ``rounds`` rounds on `grid`; write results; return the summary."""
    method = METHODS[spec["method"]]
    federation = load_federation(spec)
    recorder = RunRecorder(out_dir, spec, method.headline, on_record)
    strategy = method.build(spec, federation, recorder.on_round)
    strategy.start(grid, method.initial_arrays(spec, federation), num_rounds=spec["rounds"])
    return recorder.finish(federation.num_clients)
