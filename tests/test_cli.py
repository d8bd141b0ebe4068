"""`fedsim run` refuses bad input before any work starts, naming what is wrong."""

import subprocess
import sys

import pytest


def fedsim(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fedsim.cli", *args], capture_output=True,
                          text=True, timeout=120, cwd=cwd)


@pytest.mark.parametrize("args, words", [
    (["--set", "rounds=0"], ["rounds = 0", "an int in [1, 100000]"]),
    (["--set", "fedncf.rho=0.1"], ["unknown spec key", "fedncf.rho"]),
    (["--set", "partitioner=iid", "--set", "num_clients=100000"],
     ["num_clients", "100000", "500"]),
    (["missing.toml"], ["missing.toml", "does not exist"]),
    (["--set", "dataset=filmtrust", "--data-dir", "nowhere"], ["ratings.txt", "FEDSIM_DATA_DIR"]),
    (["."], ["spec file .", "is a directory"]),  # not an IsADirectoryError traceback
])
@pytest.mark.slow
def test_bad_input_fails_fast_with_a_named_reason(args, words, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # no cached copy of any dataset
    monkeypatch.delenv("FEDSIM_DATA_DIR", raising=False)
    result = fedsim("run", *args, "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    for word in words:
        assert word in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()


def test_keys_prints_the_reference():
    result = fedsim("keys")
    assert result.returncode == 0 and "`fedncf.server_lr`" in result.stdout
