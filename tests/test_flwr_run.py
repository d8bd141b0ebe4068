"""Smoke test of Flower's own launcher: `flwr run . --run-config SPEC.toml` on a local SuperLink.

`flwr run` exits 0 even when the run fails, so the test reads the run's status with
`flwr list --format json` and checks the results the ServerApp wrote. The SuperLink it spawns
outlives the run; the test stops it (and its children) by its process group.
"""

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.processes import (flwr_env, free_port, processes_naming, run_status, spec_file,
                             stop_groups)

pytestmark = pytest.mark.slow  # a SuperLink and a Ray simulation

ROOT = Path(__file__).resolve().parent.parent


def test_flwr_run_completes_a_simulation_and_writes_results(tmp_path):
    http_port, control_port = free_port(), free_port()
    env = flwr_env(tmp_path / "flwr", FLWR_LOCAL_SUPERLINK_HTTP_API_PORT=str(http_port),
                   FLWR_LOCAL_CONTROL_API_PORT=str(control_port))
    out = tmp_path / "out"
    spec = spec_file(tmp_path / "spec.toml", out, nodes=2)
    try:
        run = subprocess.run(
            ["flwr", "run", str(ROOT), "--run-config", str(spec), "--federation-config",
             "num-supernodes=2 client-resources-num-cpus=1", "--stream"],
            env=env, capture_output=True, text=True, timeout=400, cwd=tmp_path)
        assert run.returncode == 0, run.stdout + run.stderr
        status, listing = run_status(["flwr", "list"], env, tmp_path)
        assert status == "finished:completed", listing + run.stdout[-3000:]
        summary = json.loads((out / "summary.json").read_text())
        assert summary["rounds"] == 2 and summary["num_clients"] == 500
        assert summary["final"]["hr@10"] > 0
    finally:
        # The SuperLink `flwr run` spawned (detached, in its own session) names its ports.
        started = {pid for port in (http_port, control_port)
                   for pid in processes_naming(f":{port}") + processes_naming(f" {port} ")}
        groups = {group for pid in started if (group := _group(pid)) is not None}
        left = stop_groups(groups - {os.getpgrp()})
    assert started, "the SuperLink `flwr run` started was not found, so it was not stopped"
    assert not left, f"processes outlived the test: {left}"


def _group(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:  # it ended meanwhile
        return None
