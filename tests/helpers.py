"""Run a spec through a strategy on the in-process FakeGrid (no Ray)."""

from __future__ import annotations

from fedsim.app.client_app import app as client_app
from fedsim.federation import load_federation
from fedsim.methods import METHODS
from fedsim.protocol import node_count
from fedsim.spec import resolve
from tests.fake_grid import FakeGrid


def run_fake(overrides: dict, grid: FakeGrid | None = None):
    """(strategy, history, grid) after running the resolved spec to its last round."""
    spec = resolve(overrides)
    federation = load_federation(spec)
    grid = grid or FakeGrid(client_app, node_count(spec["nodes"], federation.num_clients))
    method = METHODS[spec["method"]]
    history: list[dict] = []
    strategy = method.build(spec, federation, history.append)
    strategy.start(grid, method.initial_arrays(spec, federation), num_rounds=spec["rounds"])
    return strategy, history, grid
