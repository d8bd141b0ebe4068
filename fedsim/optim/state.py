"""Persist a torch Adam's state as plain numpy arrays (for Flower records and checkpoints).

Clients keep a persistent Adam on their private parameters across rounds (FedRecGEL authors'
code) and the simulated client lives in a Flower Context between messages, so the optimiser
state must round-trip through arrays exactly.
"""

from __future__ import annotations

import numpy as np
import torch


def save_adam(optimizer: torch.optim.Adam) -> dict[str, np.ndarray]:
    """Moments and step count of every parameter, keyed by parameter position."""
    arrays: dict[str, np.ndarray] = {}
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for index, param in enumerate(params):
        state = optimizer.state.get(param)
        if not state:
            continue
        arrays[f"{index}.exp_avg"] = state["exp_avg"].detach().numpy().copy()
        arrays[f"{index}.exp_avg_sq"] = state["exp_avg_sq"].detach().numpy().copy()
        arrays[f"{index}.step"] = np.array([float(state["step"])])  # 1-d: records drop 0-d shapes
    return arrays


def load_adam(optimizer: torch.optim.Adam, arrays: dict[str, np.ndarray]) -> None:
    """Inverse of :func:`save_adam`; parameters without saved state start fresh."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for index, param in enumerate(params):
        if f"{index}.step" not in arrays:
            continue
        optimizer.state[param] = {
            "step": torch.tensor(float(arrays[f"{index}.step"][0])),
            "exp_avg": torch.from_numpy(np.array(arrays[f"{index}.exp_avg"])),
            "exp_avg_sq": torch.from_numpy(np.array(arrays[f"{index}.exp_avg_sq"])),
        }
