"""fedsim on a real two-node Ray cluster: `ray.address` attaches, and both nodes serve clients.

Both nodes run on this machine, each its own raylet with one CPU, so Flower's actor pool (one
actor per `ray.client_cpus` = 1 CPU, sized once from the cluster) has one actor on each node;
the round records' `ray_nodes` (from the replies' "runtime" record) shows which served. The
cluster keeps its files in a fresh temporary folder, which is also where `ray start` records
its address, so no other driver on the machine attaches to it by accident, and the test always
names the address explicitly. It is stopped by process group: `ray stop` would stop every Ray
process on the machine, other people's clusters included.
"""

import contextlib
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from fedsim.cli import build_parser, resolve_run_spec
from fedsim.runner.simulation import backend_config, simulate
from fedsim.spec import resolve
from tests.processes import free_port, stop_groups


@contextlib.contextmanager
def local_cluster(temp: str, workers: int):
    """A local Ray cluster (a head and `workers` worker nodes, 1 CPU each) keeping its files,
    and the address file ``ray start`` writes, in `temp`; yields its address."""
    groups: list[int] = []

    def ray_start(*args: str) -> None:
        proc = subprocess.Popen(
            ["ray", "start", *args, "--num-cpus", "1", "--num-gpus", "0", "--temp-dir", temp,
             "--object-store-memory", str(100 << 20), "--disable-usage-stats",
             "--dashboard-agent-listen-port", str(free_port()),
             "--metrics-export-port", str(free_port())],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        groups.append(proc.pid)  # the node's processes stay in this group after `ray start` exits
        output, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, output

    try:
        ray_start("--head", "--port", str(free_port()), "--include-dashboard", "false",
                  "--ray-client-server-port", str(free_port()))
        address = Path(temp, "ray_current_cluster").read_text().strip()
        for _ in range(workers):
            ray_start("--address", address)
        wait_for_nodes(address, 1 + workers)
        yield address
    finally:
        left = stop_groups(groups, grace=2.0)  # a test cluster has nothing to save
        assert not left, f"Ray processes {left} outlived the test"


@pytest.fixture
def ray_cluster():
    """Address of a fresh two-node local Ray cluster (head + one worker node, 1 CPU each)."""
    temp = tempfile.mkdtemp(prefix="fedsim-ray-")  # short: Ray's socket paths must fit 107 bytes
    try:
        with local_cluster(temp, workers=1) as address:
            yield address
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def wait_for_nodes(address: str, count: int, timeout: float = 60.0) -> None:
    """`ray start` returns before a worker node has registered; Flower sizes its actor pool from
    the nodes alive when the run starts, so wait for all of them (then disconnect)."""
    import ray

    ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    try:
        deadline = time.monotonic() + timeout
        while sum(node["Alive"] for node in ray.nodes()) < count:
            assert time.monotonic() < deadline, f"fewer than {count} Ray nodes after {timeout} s"
            time.sleep(0.5)
    finally:
        ray.shutdown()


def test_ray_address_from_the_cli_or_the_environment_attaches_without_num_cpus(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    spec = resolve_run_spec(build_parser().parse_args(["run", "--ray-address", "10.0.0.1:6379"]))
    assert backend_config(spec)["init_args"]["address"] == "10.0.0.1:6379"
    assert "num_cpus" not in backend_config(spec)["init_args"]  # Ray refuses it when attaching
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.2:6379")
    assert backend_config(resolve({}))["init_args"]["address"] == "10.0.0.2:6379"
    assert backend_config(spec)["init_args"]["address"] == "10.0.0.1:6379"  # the spec wins
    monkeypatch.delenv("RAY_ADDRESS")
    # No address: a new local instance ("local"), never a cluster Ray would find by itself.
    assert backend_config(resolve({}))["init_args"]["address"] == "local"


@pytest.mark.slow
def test_simulation_on_a_two_node_ray_cluster_uses_both_nodes(ray_cluster, tmp_path):
    records: list[dict] = []
    spec = resolve({"dataset": "synthetic-rec", "rounds": 2, "fraction": 0.05, "nodes": 4,
                    "eval_every": 2, "ray.address": ray_cluster})
    summary, _ = simulate(spec, out_dir=tmp_path, on_record=records.append)
    assert [r["round"] for r in records] == [0, 1, 2]
    assert summary["final"]["hr@10"] > 0 and summary["failures"] == 0
    # 4 messages per phase, 2 actors pulling them: each phase keeps both nodes busy.
    assert max(r["ray_nodes"] for r in records) == 2, records


@pytest.mark.slow
def test_without_an_address_a_run_starts_its_own_ray_even_beside_a_local_cluster(monkeypatch,
                                                                                 tmp_path):
    """A cluster started with `ray start --head` records its address where a plain
    ``ray.init()`` looks (RAY_TMPDIR/ray, /tmp/ray by default) and ``ray.init()`` attaches to it,
    where Ray refuses the num_cpus a local start passes: the run crashed ("When connecting to an
    existing cluster, num_cpus and num_gpus must not be provided"). A run without ray.address
    must start its own instance and leave that cluster alone."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    base = tempfile.mkdtemp(prefix="fedsim-rt-")
    try:
        with local_cluster(str(Path(base, "ray")), workers=0):
            monkeypatch.setenv("RAY_TMPDIR", base)  # where ray.init() finds that cluster
            spec = resolve({"dataset": "synthetic-rec", "data.synthetic_users": 50, "rounds": 1,
                            "fraction": 0.2, "nodes": 2})
            summary, _ = simulate(spec, out_dir=tmp_path)
            assert summary["trained_rounds"] == 1 and summary["failures"] == 0
    finally:
        shutil.rmtree(base, ignore_errors=True)
