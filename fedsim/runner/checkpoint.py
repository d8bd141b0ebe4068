"""Per-round checkpoints of the server side of a run, for ``fedsim run --resume``.

After every round the runner writes ``checkpoint.pt`` in the output directory (atomically: a
temporary file, then a rename): the round number, the run id, the global arrays and the
strategy's ``state_dict()`` (model and optimiser state, duals, history, byte counters). Client
sampling and every client draw derive from (seed, client, round), so no RNG state needs saving;
the clients' private state is kept by the clients themselves (fedsim/app/private_store.py).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord

FILE = "checkpoint.pt"


def save_checkpoint(out_dir: Path, server_round: int, run_id: str, arrays: ArrayRecord,
                    strategy_state: dict[str, Any]) -> None:
    state = {"round": server_round, "run_id": run_id,
             "arrays": {name: array.numpy() for name, array in arrays.items()},
             "strategy": strategy_state}
    partial = Path(out_dir) / f".{FILE}.part"
    torch.save(state, partial)
    os.replace(partial, Path(out_dir) / FILE)


def load_checkpoint(out_dir: Path) -> dict[str, Any]:
    """The last checkpoint, with "arrays" as an ArrayRecord; FileNotFoundError if none."""
    path = Path(out_dir) / FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: the run ended before its first round "
                                "or was not started with this directory; start it anew")
    # Our own file, holding numpy arrays and optimizer state: not a weights-only payload.
    state = torch.load(path, weights_only=False)
    state["arrays"] = ArrayRecord({k: Array(np.ascontiguousarray(v))
                                   for k, v in state["arrays"].items()})
    return state
