"""The ServerApps of docs/examples/ (docs/plugins.md) run as written, on the in-process grid.

Each example builds its strategy from plain constructor arguments in its own ServerApp; here the
app is called as Flower calls it, ``app(grid, context)``, with fedsim's ClientApp behind a
FakeGrid and a short run config.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest
from flwr.app import Context, RecordDict

from fedsim.app.client_app import app as client_app
from fedsim.app.private_store import SUFFIX
from tests.fake_grid import FakeGrid

pytestmark = pytest.mark.slow  # each example trains on the in-process grid

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"


def _example(name: str):
    spec = importlib.util.spec_from_file_location(f"docs_examples_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _run(name: str, nodes: int, run_config: dict) -> FakeGrid:
    grid = FakeGrid(client_app, nodes)
    context = Context(run_id=7, node_id=0, node_config={}, state=RecordDict(),
                      run_config={"num-nodes": nodes, **run_config})
    _example(name).app(grid, context)
    return grid


def _printed(output: str, metric: str) -> dict[int, float]:
    return {int(r): float(v) for r, v in re.findall(rf"round (\d+): .*{metric}=([0-9.]+)", output)}


def test_fedfact_post_example_pretrains_then_calibrates(data_dir, tmp_path, capsys):
    grid = _run("fedfact_post_app", 5, {"num-server-rounds": 3, "pretrain-rounds": 2,
                                         "state-dir": str(tmp_path)})
    kinds = [m.metadata.message_type for m in grid.sent]
    assert kinds.count("query.counts") == 5  # the one-off counts, one message per node
    dual = [m for m in grid.sent if m.metadata.message_type == "train"][-1]
    assert "fedfact.lambda" in dual.content.array_records["arrays"]
    gaps = _printed(capsys.readouterr().out, "dp_global")
    assert set(gaps) == {0, 1, 2, 3}
    assert gaps[3] < 0.7 * gaps[2]  # one dual round already narrows FedAvg's gap
    assert any((tmp_path / "7").rglob(f"r*{SUFFIX}"))  # the clients' private duals, in state-dir


def test_fedrecgel_example_trains_and_evaluates(data_dir, tmp_path, capsys):
    grid = _run("fedrecgel_app", 4, {"num-server-rounds": 1, "fraction-train": 0.01,
                                      "state-dir": str(tmp_path)})
    kinds = [m.metadata.message_type for m in grid.sent]
    assert kinds.count("query.rows") == kinds.count("train") > 0  # item-sparse training
    hits = _printed(capsys.readouterr().out, "hr@10")
    assert set(hits) == {0, 1} and 0 < hits[1] <= 1
    assert any((tmp_path / "7").rglob(f"r*{SUFFIX}"))  # user embeddings stayed with the clients
