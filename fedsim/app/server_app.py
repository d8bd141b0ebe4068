"""The ServerApp used by ``flwr run`` and the deployment runtime.

The spec comes from the run config: pyproject's ``[tool.flwr.app.config]`` declares every key
with its default, and ``flwr run . --run-config SPEC.toml`` overrides them. ``flwr run`` exits 0
whatever happens to the run, so check a spec first with ``fedsim check SPEC.toml`` (the same
checks as here, before anything is submitted). Here the spec and the output folder are checked
before the ServerApp waits for any node; a failure (and a run in which no training round
counted) fails the run, which ``flwr list`` then shows as ``finished:failed``.
"""

from __future__ import annotations

from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedsim.runner.experiment import default_out_dir, prepare_out_dir, run_on_grid
from fedsim.runner.progress import describe
from fedsim.runner.results import untrained
from fedsim.spec import SpecError, resolve

app = ServerApp()


class RunFailed(RuntimeError):
    """The run cannot start, or trained nothing; the message says why."""


@app.main()
def main(grid: Grid, context: Context) -> None:
    try:
        spec = resolve(dict(context.run_config))
        out = Path(spec["out_dir"] or default_out_dir(spec)).resolve()
        prepare_out_dir(out)
    except (SpecError, ValueError) as err:
        print(f"fedsim: error: {err}", flush=True)
        raise RunFailed(str(err)) from None
    print(f"fedsim: {spec['method']} on {spec['dataset']}, results in {out}", flush=True)
    summary = run_on_grid(grid, spec, out,
                          on_record=lambda r: print(f"round {r['round']}: {describe(r)}",
                                                    flush=True))
    if summary["trained_rounds"] == 0:
        print(f"fedsim: error: {untrained(summary)}; results in {out}", flush=True)
        raise RunFailed(untrained(summary))
