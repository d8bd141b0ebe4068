"""The ServerApp used by ``flwr run`` and the deployment runtime.

The spec comes from the run config: pyproject's ``[tool.flwr.app.config]`` declares every key
with its default, and ``flwr run . --run-config SPEC.toml`` overrides them.
"""

from __future__ import annotations

from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedsim.runner.experiment import default_out_dir, run_on_grid
from fedsim.runner.progress import describe
from fedsim.spec import resolve

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    spec = resolve(dict(context.run_config))
    out = Path(spec["out_dir"] or default_out_dir(spec)).resolve()
    print(f"fedsim: {spec['method']} on {spec['dataset']}, results in {out}", flush=True)
    run_on_grid(grid, spec, out,
                on_record=lambda r: print(f"round {r['round']}: {describe(r)}", flush=True))
