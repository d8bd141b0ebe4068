"""Smoke test of Flower's own launcher: `flwr run . --run-config SPEC.toml` on a local SuperLink.

`flwr run` exits 0 even when the run fails, so the test reads the run's status with
`flwr list --format json` and checks the results the ServerApp wrote. The SuperLink it spawns
outlives the run; the test stops it (and its children) by pid.
"""

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def superlink_pids(port: int) -> list[int]:
    """Pids of processes whose full command line names a superlink and `port`."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue
        if proc.name.isdigit() and "superlink" in command and str(port) in command:
            pids.append(int(proc.name))
    return pids


def test_flwr_run_completes_a_simulation_and_writes_results(tmp_path):
    http_port, control_port = free_port(), free_port()
    env = {**os.environ, "FLWR_HOME": str(tmp_path / "flwr"),
           "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "FLWR_TELEMETRY_ENABLED": "0",
           "FLWR_DISABLE_UPDATE_CHECK": "1",
           "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(http_port),
           "FLWR_LOCAL_CONTROL_API_PORT": str(control_port)}
    out = tmp_path / "out"
    spec = tmp_path / "spec.toml"
    spec.write_text(f'dataset = "synthetic-rec"\nrounds = 2\nfraction = 0.05\nnodes = 2\n'
                    f'eval_every = 2\nout_dir = "{out}"\n')
    try:
        run = subprocess.run(
            ["flwr", "run", str(ROOT), "--run-config", str(spec), "--federation-config",
             "num-supernodes=2 client-resources-num-cpus=1", "--stream"],
            env=env, capture_output=True, text=True, timeout=400, cwd=tmp_path)
        assert run.returncode == 0, run.stdout + run.stderr
        deadline = time.monotonic() + 60
        while True:
            listing = subprocess.run(["flwr", "list", "--format", "json"], env=env,
                                     capture_output=True, text=True, timeout=60, cwd=tmp_path)
            runs = json.loads(listing.stdout)["runs"]
            status = runs[0]["status"] if runs else ""
            if status.startswith("finished") or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert status == "finished:completed", listing.stdout + run.stdout[-3000:]
        summary = json.loads((out / "summary.json").read_text())
        assert summary["rounds"] == 2 and summary["num_clients"] == 500
        assert summary["final"]["hr@10"] > 0
    finally:
        started = set(superlink_pids(http_port) + superlink_pids(control_port))
        for pid in started:
            try:
                os.killpg(os.getpgid(pid), signal.SIGTERM)
            except ProcessLookupError:
                pass
    assert started, "the SuperLink `flwr run` started was not found, so it was not stopped"
    time.sleep(1)
    assert not superlink_pids(http_port), "the SuperLink outlived the test"
