"""fedsim under Flower's deployment runtime: a real SuperLink and two real SuperNodes on loopback.

The same ServerApp and ClientApp as in simulation run as separate processes, as they would on
separate machines: `flower-superlink --insecure`, two `flower-supernode`s that name their node
index in `--node-config "partition-id=i num-partitions=2"` (what the ClientApp's discovery
reads), each with its own Runtime API port and FLWR_HOME, and `flwr run` submits the app to
the SuperLink through a connection in a temporary FLWR_HOME. `flwr run` exits 0 even for a
failed run, so the test reads the status with `flwr list`. Every process the test starts runs
in its own process group and is stopped by it; the SuperLink's SuperExec starts its own group,
found by the SuperLink's port in its command line.

Slow (about 100 s on 2 busy cores): the deployment runtime starts a fresh ClientApp process
for every message (torch import, data load) and polls every few seconds.
"""

import contextlib
import json
import os
import subprocess
from pathlib import Path

from tests.processes import (flwr_env, free_port, processes_naming, run_status, spec_file,
                             stop_groups, wait_for_port)

ROOT = Path(__file__).resolve().parent.parent


def test_flwr_run_on_a_superlink_with_two_supernodes(tmp_path):
    link = free_port()
    env = flwr_env(tmp_path / "flwr")
    (tmp_path / "flwr").mkdir()
    (tmp_path / "flwr" / "config.toml").write_text(
        f'[superlink]\ndefault = "loopback"\n\n'
        f'[superlink.loopback]\naddress = "127.0.0.1:{link}"\ninsecure = true\n')
    out = tmp_path / "out"
    spec = spec_file(tmp_path / "spec.toml", out, nodes=2)
    logs = tmp_path / "logs"
    logs.mkdir()
    services: list[subprocess.Popen] = []

    def start(name: str, command: list[str], **extra_env: str) -> None:
        with open(logs / f"{name}.log", "w") as log:
            services.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                             env={**env, **extra_env}, cwd=tmp_path,
                                             start_new_session=True))

    def flwr(*args: str, timeout: float) -> subprocess.CompletedProcess:
        return subprocess.run(["flwr", *args], env=env, capture_output=True, text=True,
                              timeout=timeout, cwd=tmp_path)

    node_ports = [free_port(), free_port()]
    try:
        start("superlink", ["flower-superlink", "--insecure", "--host", "127.0.0.1",
                            "--port", str(link), "--disable-runtime-dependency-installation"])
        for i, port in enumerate(node_ports):
            start(f"supernode{i}", ["flower-supernode", "--insecure",
                                    "--superlink", f"127.0.0.1:{link}", "--port", str(port),
                                    "--node-config", f"partition-id={i} num-partitions=2"],
                  FLWR_HOME=str(tmp_path / f"flwr-node{i}"))  # as if on its own machine
        wait_for_port(link, timeout=60)
        run = flwr("run", str(ROOT), "loopback", "--run-config", str(spec), "--stream",
                   timeout=400)
        assert run.returncode == 0, run.stdout + run.stderr
        status, listing = run_status(["flwr", "list", "loopback"], env, tmp_path)
        assert status == "finished:completed", listing + run.stdout[-3000:]
        summary = json.loads((out / "summary.json").read_text())
        assert summary["rounds"] == 2 and summary["num_clients"] == 500
        assert summary["final"]["hr@10"] > 0 and summary["failures"] == 0
        records = [json.loads(line) for line in (out / "metrics.jsonl").open()]
        assert [r["round"] for r in records] == [0, 1, 2]
        assert all(r["ray_nodes"] == 0 for r in records)  # no Ray in the deployment runtime
    finally:
        groups = {proc.pid for proc in services}
        for port in (link, *node_ports):  # SuperExecs name their Runtime API address
            for pid in processes_naming(f"127.0.0.1:{port}"):
                with contextlib.suppress(ProcessLookupError):
                    groups.add(os.getpgid(pid))
        left = stop_groups(groups)
        for proc in services:
            proc.wait(timeout=10)
    assert not left, f"processes {left} outlived the test; logs in {logs}"
