"""Every test that starts Ray or a Flower/Ray launcher carries the `slow` marker.

`pytest -m "not slow"` is the developer's inner loop (README): it stays about a minute only
while the tests that start Ray, a Ray cluster, a SuperLink/SuperNode or `flwr run` are marked
slow. In every run (CI included) a test without the marker that starts one of them fails,
naming what it started, before it starts it. Caught in this process: Flower's simulation at
``flwr.simulation.run_simulation`` (fedsim's ``simulate`` calls it; refused any later, in the
thread where Flower's Ray backend starts Ray, the run hangs instead of failing) and Ray at
``ray.init``. Caught among the programs a test spawns: ``ray``, ``flwr`` and Flower's
SuperLink, SuperNode and SuperExec. A ``python -m fedsim.cli run`` child is not inspected: it
may end on bad input before Ray starts (tests/test_cli.py), which only the child knows.

Loaded as a plugin by tests/conftest.py; tests/test_markers.py runs it on small test files.
"""

from __future__ import annotations

import os
import shlex
import subprocess

import flwr.simulation
import pytest
import ray

LAUNCHERS = frozenset({"ray", "flwr", "flower-superlink", "flower-supernode",
                       "flower-superexec"})


def program_of(args) -> str:
    """The program a Popen call runs: the first word of its command, without the folder."""
    first = shlex.split(args)[0] if isinstance(args, str) else args[0]
    return os.path.basename(os.fsdecode(first))


@pytest.fixture(autouse=True)
def slow_work_needs_the_slow_marker(request, monkeypatch):
    if request.node.get_closest_marker("slow"):
        yield
        return
    started: list[str] = []

    def refuse(what: str) -> None:
        started.append(what)
        raise RuntimeError(f"{request.node.nodeid} starts {what} but is not marked slow: "
                           f"add @pytest.mark.slow (tests/slow_guard.py says why)")

    def guarded_run_simulation(*args, **kwargs):
        refuse("a Flower simulation (flwr.simulation.run_simulation)")

    def guarded_ray_init(*args, **kwargs):
        refuse("Ray (ray.init)")

    class GuardedPopen(subprocess.Popen):
        def __init__(self, args, *rest, **kwargs):
            if program_of(args) in LAUNCHERS:
                refuse(f"`{program_of(args)}` (a subprocess)")
            super().__init__(args, *rest, **kwargs)

    monkeypatch.setattr(flwr.simulation, "run_simulation", guarded_run_simulation)
    monkeypatch.setattr(ray, "init", guarded_ray_init)
    monkeypatch.setattr(subprocess, "Popen", GuardedPopen)
    yield
    # A test may swallow the error, or meet it in a thread of its own.
    if started:
        pytest.fail(f"{request.node.nodeid} is not marked slow but starts {', '.join(started)}",
                    pytrace=False)
