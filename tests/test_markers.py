"""The `slow` marker's guard (tests/slow_guard.py) on a small test file: unmarked tests that
start Ray or a launcher fail, before starting it; marked ones and other subprocesses run."""

INNER = '''
import subprocess
import sys
import threading

import flwr.simulation
import pytest
import ray

COLLECTED = flwr.simulation.run_simulation, ray.init, subprocess.Popen  # before any fixture ran


def test_runs_a_flower_simulation():
    flwr.simulation.run_simulation(server_app=None, client_app=None, num_supernodes=1)


def test_starts_ray():
    ray.init(num_cpus=1)


def test_starts_ray_in_a_thread_that_swallows_the_error():
    def start():
        try:
            ray.init(num_cpus=1)
        except RuntimeError:
            pass

    thread = threading.Thread(target=start)
    thread.start()
    thread.join()


def test_runs_flwr():
    subprocess.run(["flwr", "--version"])


def test_runs_a_superlink_by_its_path_in_a_shell_command():
    subprocess.run("/some/venv/bin/flower-superlink --insecure", shell=True)


def test_runs_another_program():
    assert subprocess.run([sys.executable, "-c", "pass"]).returncode == 0


@pytest.mark.slow
def test_marked_slow_is_left_alone():
    assert (flwr.simulation.run_simulation, ray.init, subprocess.Popen) == COLLECTED
'''


def test_unmarked_tests_that_start_ray_or_a_launcher_fail_and_marked_ones_run(pytester):
    pytester.makepyfile(test_inner=INNER)
    result = pytester.runpytest("-p", "tests.slow_guard")
    # Each refused test fails where it started Ray or the launcher, and the guard's teardown
    # reports it again (the only report when the test swallowed the error).
    result.assert_outcomes(passed=3, failed=4, errors=5)
    outcomes = {report.nodeid.split("::")[1]: report.outcome
                for report in result.reprec.getreports("pytest_runtest_logreport")
                if report.when == "call"}
    assert outcomes == {"test_runs_a_flower_simulation": "failed",
                        "test_starts_ray": "failed",
                        "test_starts_ray_in_a_thread_that_swallows_the_error": "passed",
                        "test_runs_flwr": "failed",
                        "test_runs_a_superlink_by_its_path_in_a_shell_command": "failed",
                        "test_runs_another_program": "passed",
                        "test_marked_slow_is_left_alone": "passed"}
    result.stdout.fnmatch_lines([
        "*test_runs_a_flower_simulation starts a Flower simulation* but is not marked slow*",
        "*test_starts_ray starts Ray (ray.init) but is not marked slow*",
        "*test_runs_flwr starts `flwr` (a subprocess) but is not marked slow*",
        "*starts `flower-superlink` (a subprocess) but is not marked slow*",
    ])
