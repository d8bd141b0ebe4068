"""Start and stop the external processes a test needs (Ray nodes, Flower SuperLink/SuperNodes).

Tests start each service in its own session (``start_new_session=True``), so everything it
spawns shares one process group, and stop it by that group: never by process name, because
other Ray or Flower processes may be running on the same machine.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float) -> None:
    """Wait until something accepts connections on 127.0.0.1:`port`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on port {port} after {timeout:.0f} s")
            time.sleep(0.2)


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group `pgid`."""
    members = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":  # fields: state, ppid, pgrp, ...
            members.append(int(proc.name))
    return members


def processes_naming(text: str) -> list[int]:
    """Pids of processes whose command line contains `text` (e.g. a test's unique port)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue
        if proc.name.isdigit() and text in command and int(proc.name) != os.getpid():
            pids.append(int(proc.name))
    return pids


def stop_groups(pgids: Iterable[int], grace: float = 10.0) -> list[int]:
    """SIGTERM every group, SIGKILL what is left after `grace` seconds; return the pids that
    still live after that (empty when all is stopped). Ray's raylet and GCS may ignore SIGTERM
    while they shut down, hence the SIGKILL."""
    pgids = set(pgids)

    def signal_all(sig: int) -> None:
        for pgid in pgids:
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                pass

    def alive() -> list[int]:
        return [pid for pgid in pgids for pid in group_members(pgid)]

    signal_all(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    if alive():
        signal_all(signal.SIGKILL)
        time.sleep(1)
    return alive()


def flwr_env(flwr_home: Path, **extra: str) -> dict[str, str]:
    """Environment for a `flwr` command in a test: scratch FLWR_HOME, no dependency re-install
    (else every run re-syncs the app's dependencies), no telemetry, no update check."""
    return {**os.environ, "FLWR_HOME": str(flwr_home),
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1", **extra}


def run_status(list_command: list[str], env: dict[str, str], cwd: Path,
               timeout: float = 60) -> tuple[str, str]:
    """(status, listing) of the newest run once it has finished, or at `timeout`.

    `flwr run` exits 0 even when the run failed, so tests read the status from `flwr list`."""
    deadline = time.monotonic() + timeout
    while True:
        listing = subprocess.run(list_command + ["--format", "json"], env=env, cwd=cwd,
                                 capture_output=True, text=True, timeout=60).stdout
        runs = json.loads(listing)["runs"]
        status = runs[0]["status"] if runs else ""
        if status.startswith("finished") or time.monotonic() > deadline:
            return status, listing
        time.sleep(1)


def spec_file(path: Path, out: Path, nodes: int) -> Path:
    """The small run both launcher tests submit: synthetic data, 2 rounds."""
    path.write_text(f'dataset = "synthetic-rec"\nrounds = 2\nfraction = 0.05\nnodes = {nodes}\n'
                    f'eval_every = 2\nout_dir = "{out}"\n')
    return path
