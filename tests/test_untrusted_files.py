"""No code runs from a results or state file (issue 20).

A run folder (``checkpoint.pt``) can come from anyone, and ``state_dir`` may sit on storage every
node shares. Both hold numbers, strings and containers only: crafted files whose loading would
create a marker file (a pickle payload) leave no marker and fail in one line naming the file.
"""

from __future__ import annotations

import logging
import math
import pickle

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord

from fedsim.app.client_app import _client, app as client_app
from fedsim.app.private_store import SUFFIX, PrivateStore, StateFileError, read_version
from fedsim.cli import main as fedsim_main
from fedsim.runner.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from fedsim.runner.experiment import run_on_grid
from fedsim.spec import resolve
from tests.fake_grid import FakeGrid


class Payload:
    """Unpickling this creates `marker`: what an attacker's file would do, harmlessly."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_the_payload_runs_when_unpickled(tmp_path):
    """The control: loading the crafted files the old way would have run the payload."""
    pickle.loads(pickle.dumps(Payload(tmp_path / "pickle")))
    torch.save(Payload(tmp_path / "torch"), tmp_path / "checkpoint.pt")
    torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert (tmp_path / "pickle").exists() and (tmp_path / "torch").exists()


def test_resuming_from_a_crafted_checkpoint_runs_no_code_and_fails_in_one_line(tmp_path,
                                                                               capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text('dataset = "synthetic-rec"\nrounds = 2\n')
    torch.save(Payload(tmp_path / "marker"), run / "checkpoint.pt")
    assert fedsim_main(["run", "--resume", str(run)]) == 2
    assert not (tmp_path / "marker").exists()
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and str(run / "checkpoint.pt") in error[0], error
    assert "not a checkpoint fedsim can load safely" in error[0]
    # A raw pickle (not torch's zip) is refused the same way.
    (run / "checkpoint.pt").write_bytes(pickle.dumps(Payload(tmp_path / "marker")))
    with pytest.raises(CheckpointError, match="checkpoint.pt is not a checkpoint"):
        load_checkpoint(run)
    assert not (tmp_path / "marker").exists()


def test_a_crafted_state_file_runs_no_code_and_fails_in_one_line(tmp_path):
    store = PrivateStore(tmp_path, "run", 3, visible_round=1, write_round=2)
    store.folder.mkdir(parents=True)
    planted = store.folder / f"r000001{SUFFIX}"
    planted.write_bytes(pickle.dumps(Payload(tmp_path / "marker")))
    with pytest.raises(StateFileError) as raised:
        store.load()
    assert not (tmp_path / "marker").exists()
    assert str(planted) in str(raised.value) and len(str(raised.value).splitlines()) == 1


def test_a_resumed_run_with_crafted_client_state_runs_no_code_and_fails_those_clients(
        tmp_path, caplog):
    """Round 1, then every client's state replaced by a payload, then resume: the clients of
    round 2 fail (counted, one log line naming the file each); no marker appears."""
    spec = resolve({"dataset": "synthetic-rec", "data.synthetic_users": 40, "rounds": 1,
                    "fraction": 0.25, "nodes": 2, "eval_every": 10})
    out = tmp_path / "run"
    run_on_grid(FakeGrid(client_app, 2), spec, out)
    run_id = load_checkpoint(out)["run_id"]
    payload = pickle.dumps(Payload(tmp_path / "marker"))
    for partition in range(40):
        folder = out / "client_state" / run_id / str(partition)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"r000001{SUFFIX}").write_bytes(payload)
    _client.cache_clear()
    records = []
    logging.getLogger("flwr").addHandler(caplog.handler)
    try:
        run_on_grid(FakeGrid(client_app, 2), {**spec, "rounds": 2}, out,
                    on_record=records.append, resume=True)
    finally:
        logging.getLogger("flwr").removeHandler(caplog.handler)
    assert not (tmp_path / "marker").exists()
    assert records[-1]["round"] == 2 and records[-1]["failures"] >= 10
    refusals = [r.getMessage() for r in caplog.records if "is not a private-state file" in
                r.getMessage()]
    assert refusals and f"client_state/{run_id}/" in refusals[0]


def framed(header: str, data: bytes = b"") -> bytes:
    """A file in the store's layout: header length, header, data."""
    return len(header).to_bytes(8, "little") + header.encode() + data


@pytest.mark.parametrize("data, reason", [
    (b"\x01\x00", "unpack_from requires a buffer of at least 8 bytes"),
    ((10**6).to_bytes(8, "little") + b"{}", "exceeds the file"),
    (framed("[1]"), "not a JSON object"),
    (framed("{x"), "Expecting property name"),
    (framed('{"a":{"dtype":"O","shape":[1],"data_offsets":[0,8]}}', bytes(8)),
     "not a number type"),
    (framed('{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}', bytes(8)), "does not fit"),
    (framed('{"a":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}}', bytes(4)),
     "buffer is smaller"),
    (framed('{"a":{"dtype":"F64","shape":[-1],"data_offsets":[0,8]}}', bytes(8)),
     "non-negative integers"),
    (framed("[" * 100_000), "recursion"),
], ids=["short", "header-length", "not-an-object", "bad-json", "dtype", "size", "past-the-end",
        "negative", "deep-nesting"])
def test_a_malformed_state_file_is_a_one_line_error_naming_it(tmp_path, data, reason):
    path = tmp_path / f"r000001{SUFFIX}"
    path.write_bytes(data)
    with pytest.raises(StateFileError, match=reason) as raised:
        read_version(path)
    assert str(path) in str(raised.value) and "\n" not in str(raised.value)


def test_state_round_trips_exactly_and_only_numbers_are_stored(tmp_path):
    arrays = {"u": np.arange(6, dtype=np.float32).reshape(2, 3), "step": np.array([3.0]),
              "ids": np.array([4, 1], np.int64), "mask": np.array([True, False]),
              "empty": np.zeros((0, 4), np.float32), "scalar": np.array(2.5),
              "strided": np.arange(10.0)[::-3]}
    store = PrivateStore(tmp_path, "run", 0, visible_round=0, write_round=1)
    store.save(arrays)
    back = PrivateStore(tmp_path, "run", 0, visible_round=1, write_round=2).load()
    assert list(back) == list(arrays)
    for name, value in arrays.items():
        assert back[name].dtype == value.dtype and back[name].shape == value.shape, name
        np.testing.assert_array_equal(back[name], value)
        assert back[name].flags.writeable and back[name].flags.aligned, name
    with pytest.raises(TypeError, match="'names' has dtype <U1: only numbers"):
        store.save({"names": np.array(["a", "b"])})
    with pytest.raises(TypeError, match="only numbers"):
        store.save({"objects": np.array([{"a": 1}], dtype=object)})


def test_a_checkpoint_gives_back_exactly_what_the_strategy_saved(tmp_path):
    params = [torch.randn(3, 2), torch.randn(4)]
    optimizer = torch.optim.Adam(params, lr=1e-3)
    for param in params:
        param.grad = torch.ones_like(param)
    optimizer.step()
    strategy = {"history": [{"round": 1, "hr@10": 0.25, "loss": float("nan"), "gap": math.inf,
                             "mean": np.float32(0.1), "count": np.int64(7), "flag": np.bool_(1)}],
                "bytes": {"up": 10, "down": 20}, "lam": np.array([[0.5, -1.0]]),
                "pooled": np.array([[3, 4]], np.int64), "item_beta": None,
                "params": {"w": params[0].clone()}, "optimizer": optimizer.state_dict(),
                "pair": (1, "a"), "by_id": {3: [1.5, (2, None)]}}
    arrays = ArrayRecord({"w": Array(np.arange(4, dtype=np.float32))})
    save_checkpoint(tmp_path, 5, "abc123", arrays, strategy)
    loaded = load_checkpoint(tmp_path)
    assert loaded["round"] == 5 and loaded["run_id"] == "abc123"
    np.testing.assert_array_equal(loaded["arrays"]["w"].numpy(), np.arange(4, dtype=np.float32))
    back = loaded["strategy"]
    record = back["history"][0]
    assert math.isnan(record["loss"]) and record["gap"] == math.inf
    assert type(record["mean"]) is np.float32 and record["mean"] == np.float32(0.1)
    assert type(record["count"]) is np.int64 and type(record["flag"]) is np.bool_
    assert back["bytes"] == {"up": 10, "down": 20} and back["item_beta"] is None
    assert back["pair"] == (1, "a") and back["by_id"] == {3: [1.5, (2, None)]}
    for name in ("lam", "pooled"):
        assert back[name].dtype == strategy[name].dtype
        np.testing.assert_array_equal(back[name], strategy[name])
    assert torch.equal(back["params"]["w"], params[0])
    # The optimizer state loads and steps exactly like the original.
    copies = [p.detach().clone() for p in params]
    resumed = torch.optim.Adam(copies, lr=1e-3)
    resumed.load_state_dict(back["optimizer"])
    for param in copies:
        param.grad = torch.ones_like(param)
    optimizer.step()
    resumed.step()
    for original, copy in zip(params, copies):
        assert torch.equal(original, copy)


def test_a_checkpoint_refuses_what_it_cannot_store_and_a_run_id_that_is_a_path(tmp_path):
    arrays = ArrayRecord({})
    with pytest.raises(TypeError, match=r"checkpoint\['strategy'\]\['rng'\]: cannot checkpoint"):
        save_checkpoint(tmp_path, 1, "abc", arrays, {"rng": np.random.default_rng(0)})
    save_checkpoint(tmp_path, 1, "../../elsewhere", arrays, {})
    with pytest.raises(CheckpointError, match="run id"):
        load_checkpoint(tmp_path)
