"""fedsim under Flower's deployment runtime: a real SuperLink and real SuperNodes on loopback.

The same ServerApp and ClientApp as in simulation run as separate processes, as they would on
separate machines: `flower-superlink`, two `flower-supernode`s that name their node index in
`--node-config "partition-id=i num-partitions=2"` (what the ClientApp's discovery reads), each
with its own Runtime API port and FLWR_HOME, and `flwr run` submits the app to the SuperLink
through a connection in a temporary FLWR_HOME. `flwr run` exits 0 even for a failed run, so the
tests read the status with `flwr list`. Every process a test starts runs in its own process
group and is stopped by it; the SuperLink's SuperExec starts its own group, found by the
SuperLink's port in its command line.

Two set-ups, both in the README: the documented one across machines, TLS with the certificates
of deploy/credentials.py and SuperNode authentication (SuperNodes registered by their public
keys; a SuperNode whose key was never registered and one without a key are refused), and the
insecure one, for loopback only.

Slow (about 100 s each on 2 busy cores): the deployment runtime starts a fresh ClientApp
process for every message (torch import, data load) and polls every few seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from tests.processes import (flwr_env, free_port, processes_naming, run_status, spec_file,
                             stop_groups, wait_for_port)

pytestmark = pytest.mark.slow  # a SuperLink and two SuperNodes per test

ROOT = Path(__file__).resolve().parent.parent


class Loopback:
    """The processes of one deployment on 127.0.0.1, their logs, and `flwr` commands against
    it through the connection "loopback"."""

    def __init__(self, tmp_path: Path):
        self.tmp_path, self.link = tmp_path, free_port()
        self.env = flwr_env(tmp_path / "flwr")
        self.logs = tmp_path / "logs"
        self.logs.mkdir()
        self.services: dict[str, subprocess.Popen] = {}
        self.ports = [self.link]

    def connect(self, security: str) -> None:
        """Write the "loopback" connection; `security` is its TLS line."""
        (self.tmp_path / "flwr").mkdir()
        (self.tmp_path / "flwr" / "config.toml").write_text(
            f'[superlink]\ndefault = "loopback"\n\n'
            f'[superlink.loopback]\naddress = "127.0.0.1:{self.link}"\n{security}\n')

    def start(self, name: str, command: list[str], **extra_env: str) -> None:
        with open(self.logs / f"{name}.log", "w") as log:
            self.services[name] = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env={**self.env, **extra_env},
                cwd=self.tmp_path, start_new_session=True)

    def superlink(self, *security: str) -> None:
        self.start("superlink", ["flower-superlink", *security, "--host", "127.0.0.1",
                                 "--port", str(self.link),
                                 "--disable-runtime-dependency-installation"])
        wait_for_port(self.link, timeout=60)

    def supernode(self, name: str, partition: int, *security: str) -> None:
        self.ports.append(port := free_port())
        self.start(name, ["flower-supernode", *security, "--superlink", f"127.0.0.1:{self.link}",
                          "--port", str(port),
                          "--node-config", f"partition-id={partition} num-partitions=2"],
                   FLWR_HOME=str(self.tmp_path / f"flwr-{name}"))  # as if on its own machine

    def flwr(self, *args: str, timeout: float) -> subprocess.CompletedProcess:
        return subprocess.run(["flwr", *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, cwd=self.tmp_path)

    def run_the_app(self) -> None:
        """`flwr run` the launcher tests' small spec on two nodes; check it completed."""
        out = self.tmp_path / "out"
        spec = spec_file(self.tmp_path / "spec.toml", out, nodes=2)
        run = self.flwr("run", str(ROOT), "loopback", "--run-config", str(spec), "--stream",
                        timeout=400)
        assert run.returncode == 0, run.stdout + run.stderr
        status, listing = run_status(["flwr", "list", "loopback"], self.env, self.tmp_path)
        assert status == "finished:completed", listing + run.stdout[-3000:]
        summary = json.loads((out / "summary.json").read_text())
        assert summary["rounds"] == 2 and summary["num_clients"] == 500
        assert summary["final"]["hr@10"] > 0 and summary["failures"] == 0
        records = [json.loads(line) for line in (out / "metrics.jsonl").open()]
        assert [r["round"] for r in records] == [0, 1, 2]
        assert all(r["ray_nodes"] == 0 for r in records)  # no Ray in the deployment runtime

    def stop(self) -> list[int]:
        """Stop every process started (and the SuperExecs); the pids still alive after."""
        groups = {proc.pid for proc in self.services.values()}
        for port in self.ports:  # SuperExecs name their Runtime API address
            for pid in processes_naming(f"127.0.0.1:{port}"):
                with contextlib.suppress(ProcessLookupError):
                    groups.add(os.getpgid(pid))
        left = stop_groups(groups)
        for proc in self.services.values():
            proc.wait(timeout=10)
        return left


@pytest.fixture
def loopback(tmp_path):
    deployment = Loopback(tmp_path)
    try:
        yield deployment
    finally:
        left = deployment.stop()
    assert not left, f"processes {left} outlived the test; logs in {deployment.logs}"


def test_flwr_run_under_tls_with_two_authenticated_supernodes(loopback, tmp_path):
    keys = tmp_path / "credentials"
    made = subprocess.run([sys.executable, str(ROOT / "deploy" / "credentials.py"), str(keys),
                           "--supernodes", "3"], capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    ca = str(keys / "ca.crt")
    loopback.connect(f'root-certificates = "{ca}"')
    loopback.superlink("--ssl-ca-certfile", ca, "--ssl-certfile", str(keys / "superlink.crt"),
                       "--ssl-keyfile", str(keys / "superlink.key"), "--enable-supernode-auth")
    tls = ssl.create_default_context(cafile=ca)
    with socket.create_connection(("127.0.0.1", loopback.link), timeout=10) as raw, \
            tls.wrap_socket(raw, server_hostname="127.0.0.1") as channel:
        assert channel.version() in ("TLSv1.2", "TLSv1.3")  # and the certificate verified
    for i in (0, 1):
        added = loopback.flwr("supernode", "register", str(keys / f"supernode-{i}.pub"),
                              "loopback", timeout=60)
        assert added.returncode == 0, added.stdout + added.stderr
    key = lambda i: ("--auth-supernode-private-key", str(keys / f"supernode-{i}.key"))
    loopback.supernode("supernode0", 0, "--root-certificates", ca, *key(0))
    loopback.supernode("supernode1", 1, "--root-certificates", ca, *key(1))
    # Two intruders claim node 1's partitions: one with a key that was never registered, one
    # with none (without --enable-supernode-auth it would register itself and be served).
    loopback.supernode("unknown-key", 1, "--root-certificates", ca, *key(2))
    loopback.supernode("no-key", 1, "--root-certificates", ca)
    loopback.run_the_app()
    for name, refusal in (("unknown-key", "Failed to activate SuperNode"),
                          ("no-key", "All SuperNodes must be registered via the CLI")):
        assert loopback.services[name].wait(timeout=60) != 0, name
        assert refusal in (loopback.logs / f"{name}.log").read_text(), name


def test_flwr_run_on_an_insecure_superlink_on_loopback(loopback):
    loopback.connect("insecure = true")
    loopback.superlink("--insecure")
    for i in (0, 1):
        loopback.supernode(f"supernode{i}", i, "--insecure")
    loopback.run_the_app()
