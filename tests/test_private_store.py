"""The clients' node-local private state (fedsim.app.private_store)."""

import numpy as np
import pytest

from fedsim.app.private_store import PrivateStore


def test_a_round_sees_the_newest_earlier_version_and_the_last_two_are_kept(tmp_path):
    store = lambda visible, write: PrivateStore(tmp_path, "run", 7, visible, write)
    assert store(0, 1).load() is None  # before the first save: the client initialises
    for round_ in (1, 4, 9):
        store(round_ - 1, round_).save({"u": np.full((1, 2), round_, np.float32),
                                        "step": np.array([float(round_)])})
    # Training in round 9 again (a replay after a crash) reads round 4's state, not its own.
    assert store(8, 9).load()["u"][0, 0] == 4
    assert store(9, None).load()["step"][0] == 9.0
    assert sorted(p.name for p in (tmp_path / "run" / "7").iterdir()) == [
        "r000004.safetensors", "r000009.safetensors"]
    with pytest.raises(RuntimeError, match="must not change"):
        store(9, None).save({"u": np.zeros((1, 2))})
    assert PrivateStore(tmp_path, "other-run", 7, 9, None).load() is None
