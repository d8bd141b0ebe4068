"""Run a spec through a strategy on the in-process FakeGrid (no Ray), and read what it left."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from fedsim.app.client_app import app as client_app, state_root
from fedsim.app.private_store import SUFFIX, read_version
from fedsim.federation import load_federation
from fedsim.methods import METHODS
from fedsim.protocol import nodes_for
from fedsim.spec import resolve
from tests.fake_grid import FakeGrid


def run_fake(overrides: dict, grid: FakeGrid | None = None):
    """(strategy, history, grid) after running the resolved spec to its last round.

    Without an ``out_dir`` override the clients' private state goes to a fresh temporary folder.
    """
    spec = resolve(overrides)
    spec["out_dir"] = spec["out_dir"] or tempfile.mkdtemp(prefix="fedsim-test-")
    federation = load_federation(spec)
    grid = grid or FakeGrid(client_app, nodes_for(spec, federation.num_clients))
    method = METHODS[spec["method"]]
    history: list[dict] = []
    strategy = method.build(spec, federation, {"run_id": "test", "on_round": history.append})
    strategy.start(grid, method.initial_arrays(spec, federation), num_rounds=spec["rounds"])
    return strategy, history, grid


def fail_training(monkeypatch, client_class: type, partition: int) -> None:
    """Make `partition`'s training under `client_class` raise (the others train as usual)."""
    original = client_class.train

    def flaky(self, shared, own, state, server_round):
        if self.partition_id == partition:
            raise RuntimeError("injected failure")
        return original(self, shared, own, state, server_round)

    monkeypatch.setattr(client_class, "train", flaky)


def private_arrays(strategy) -> dict[int, dict[str, np.ndarray]]:
    """The newest private state each client of the run saved (partition -> arrays)."""
    spec = json.loads(strategy.message_config["spec"])
    root = state_root(spec) / strategy.message_config["run-id"]
    latest = {}
    for folder in sorted(Path(root).iterdir()) if root.is_dir() else []:
        latest[int(folder.name)] = read_version(sorted(folder.glob(f"r*{SUFFIX}"))[-1])
    return latest


class MemoryStore:
    """A private store that keeps one client's state in memory, across rounds."""

    def __init__(self):
        self.saved = None

    def load(self):
        return self.saved

    def save(self, arrays):
        self.saved = {k: np.array(v) for k, v in arrays.items()}
