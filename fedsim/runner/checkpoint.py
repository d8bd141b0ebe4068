"""Per-round checkpoints of the server side of a run, for ``fedsim run --resume``.

After every round the runner writes ``checkpoint.pt`` in the output directory (atomically: a
temporary file, then a rename): the round number, the run id, the global arrays and the
strategy's ``state_dict()`` (model and optimiser state, duals, history, byte counters). Client
sampling and every client draw derive from (seed, client, round), so no RNG state needs saving;
the clients' private state is kept by the clients themselves (fedsim/app/private_store.py).

A checkpoint cannot carry code: it is read with ``torch.load(weights_only=True)``, which
rebuilds tensors, strings and plain containers only. The file holds the tensors (numpy arrays
travel as tensors) and one JSON text for everything else, in which each tensor is a reference
and the Python types JSON lacks are tagged (:func:`_encode`), so that a resumed strategy gets
back exactly what it saved. A run folder can come from anyone; a file that is not such a
checkpoint raises :class:`CheckpointError`, naming it, in one line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord

FILE = "checkpoint.pt"
FORMAT = "fedsim-checkpoint/2"  # 1: a full pickle (fedsim before issue 20), not read any more


class CheckpointError(ValueError):
    """A checkpoint file that is not one fedsim wrote (damaged, planted or of an old fedsim)."""


def save_checkpoint(out_dir: Path, server_round: int, run_id: str, arrays: ArrayRecord,
                    strategy_state: dict[str, Any]) -> None:
    tensors: dict[str, torch.Tensor] = {}
    state = {"round": server_round, "run_id": run_id,
             "arrays": {name: array.numpy() for name, array in arrays.items()},
             "strategy": strategy_state}
    text = json.dumps(_encode(state, tensors, "checkpoint"))
    partial = Path(out_dir) / f".{FILE}.part"
    torch.save({"format": FORMAT, "state": text, "tensors": tensors}, partial)
    os.replace(partial, Path(out_dir) / FILE)


def load_checkpoint(out_dir: Path) -> dict[str, Any]:
    """The last checkpoint, with "arrays" as an ArrayRecord; FileNotFoundError if none,
    CheckpointError if the file is not a fedsim checkpoint."""
    path = Path(out_dir) / FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: the run ended before its first round "
                                "or was not started with this directory; start it anew")
    try:
        saved = torch.load(path, weights_only=True)
    except Exception as err:  # any reason torch gives: the file is not a safe checkpoint
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointError(f"{path} is not a checkpoint fedsim can load safely (damaged, "
                              f"written by an older fedsim or not by fedsim): {reason}") from None
    try:
        if saved["format"] != FORMAT:
            raise ValueError(f"format {saved['format']!r}, expected {FORMAT!r}")
        state = _decode(json.loads(saved["state"]), saved["tensors"])
        # The run id names the clients' state folders: a plain name, no path.
        if not (type(state["round"]) is int and isinstance(state["strategy"], dict)
                and isinstance(state["run_id"], str) and state["run_id"].isalnum()):
            raise ValueError("its round, run id or strategy state is malformed")
        state["arrays"] = ArrayRecord({k: Array(np.ascontiguousarray(v))
                                       for k, v in state["arrays"].items()})
    except (ValueError, TypeError, KeyError, AttributeError, IndexError, RuntimeError) as err:
        raise CheckpointError(f"{path} is not a checkpoint fedsim wrote: "
                              f"{type(err).__name__}: {err}") from None
    return state


# Tags of the values JSON cannot hold as they are. Every dict is tagged too (its keys may be
# ints, as in a torch optimizer's state_dict), so an untagged JSON object never occurs.
def _encode(value: Any, tensors: dict[str, torch.Tensor], where: str) -> Any:
    """`value` as JSON-ready data; its tensors and arrays go to `tensors`."""
    if isinstance(value, np.generic):  # before float: np.float64 is a float
        if value.dtype.kind not in "biuf":
            raise TypeError(f"{where}: cannot checkpoint a {value.dtype} scalar")
        return {"scalar": [value.dtype.str, value.item()]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (torch.Tensor, np.ndarray)):
        key = str(len(tensors))
        if isinstance(value, np.ndarray):
            if value.dtype.kind not in "biufc":
                raise TypeError(f"{where}: cannot checkpoint a {value.dtype} array")
            tensors[key] = torch.from_numpy(np.array(value))  # a copy: contiguous, writable
            return {"ndarray": key}
        tensors[key] = value.detach()
        return {"tensor": key}
    if isinstance(value, list):
        return [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, tuple):
        return {"tuple": [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, dict):
        return {"dict": [[_encode(k, tensors, where), _encode(v, tensors, f"{where}[{k!r}]")]
                         for k, v in value.items()]}
    raise TypeError(f"{where}: cannot checkpoint a {type(value).__name__}; strategies' "
                    "state_dict() may hold numbers, strings, tensors, arrays, lists, tuples "
                    "and dicts")


def _decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`_encode`."""
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) != 1:
        raise ValueError(f"untagged JSON object with keys {sorted(value)[:5]}")
    ((tag, body),) = value.items()
    if tag == "dict":
        return {_decode(k, tensors): _decode(v, tensors) for k, v in body}
    if tag == "tuple":
        return tuple(_decode(v, tensors) for v in body)
    if tag == "tensor":
        return tensors[body]
    if tag == "ndarray":
        return tensors[body].numpy()
    if tag == "scalar":
        dtype = np.dtype(body[0])
        if dtype.kind not in "biuf":
            raise ValueError(f"scalar of dtype {dtype}")
        return dtype.type(body[1])
    raise ValueError(f"unknown tag {tag!r}")
