"""Name-based access to the partitioners, for configs and the command line.

``make_partition`` takes the union of all partitioners' parameters so that a config can name a
partitioner and pass its settings without knowing each function's signature; it checks that the
arrays the chosen partitioner needs were given and match ``num_rows``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from fedsim.partition.flwr_partitioners import flwr_dirichlet, flwr_iid, flwr_natural
from fedsim.partition.partitioners import (
    dirichlet,
    dirichlet_capped,
    hetero,
    iid,
    natural_id,
    single,
)

__all__ = ["COLUMN_PARTITIONERS", "PARTITIONERS", "make_partition"]

PARTITIONERS: dict[str, Callable[..., list[np.ndarray]]] = {
    "single": single,
    "iid": iid,
    "natural": natural_id,
    "dirichlet": dirichlet,
    "dirichlet_capped": dirichlet_capped,
    "hetero": hetero,
    # flwr-datasets' partitioners (fedsim/partition/flwr_partitioners.py).
    "flwr:iid": flwr_iid,
    "flwr:natural": flwr_natural,
    "flwr:dirichlet": flwr_dirichlet,
}
# The partitioners that split on the values of one column (`column=`).
COLUMN_PARTITIONERS = ("dirichlet", "dirichlet_capped", "flwr:dirichlet")

_ARRAY_MEANING = {
    "ids": "the natural id per row, e.g. the user id",
    "column": "the label or sensitive attribute to split on",
    "labels": "the class label per row",
}


def _require(name: str, argument: str, array: np.ndarray | None, num_rows: int) -> np.ndarray:
    if array is None:
        raise ValueError(
            f"partitioner {name!r} needs {argument}= ({_ARRAY_MEANING[argument]})"
        )
    array = np.asarray(array)
    if array.shape != (num_rows,):
        raise ValueError(
            f"{argument} has shape {array.shape}; partitioner {name!r} needs shape ({num_rows},) "
            f"to match num_rows"
        )
    return array


def make_partition(
    name: str,
    *,
    num_rows: int,
    num_clients: int,
    seed: int,
    ids: np.ndarray | None = None,
    column: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    alpha: float = 0.5,
    min_size: int = 1,
    min_per_value: int = 20,
    ids_per_client: int = 1,
    low: float = 0.2,
    high: float = 0.8,
) -> list[np.ndarray]:
    """Partition ``num_rows`` rows with the partitioner called ``name``.

    - "single": ``num_clients`` must be 1.
    - "iid", "flwr:iid": no arrays needed.
    - "natural": needs ``ids``; ``num_clients`` is ignored because the ids decide it
      (``ceil(#distinct ids / ids_per_client)``). "flwr:natural": the same with one id per client.
    - "dirichlet", "flwr:dirichlet": need ``column`` (label or sensitive attribute); use
      ``alpha``, ``min_size``.
    - "dirichlet_capped": needs ``column``; uses ``alpha``, ``min_per_value``.
    - "hetero": needs ``column`` (the sensitive attribute) and ``labels``; uses ``low``, ``high``.
    """
    if name not in PARTITIONERS:
        raise ValueError(f"partitioner {name!r} is unknown; known: {sorted(PARTITIONERS)}")
    if name == "single":
        if num_clients != 1:
            raise ValueError(f"num_clients={num_clients} is invalid for 'single'; it must be 1")
        return single(num_rows)
    if name in ("iid", "flwr:iid"):
        return PARTITIONERS[name](num_rows, num_clients, seed=seed)
    if name == "natural":
        return natural_id(
            _require(name, "ids", ids, num_rows), ids_per_client=ids_per_client, seed=seed
        )
    if name == "flwr:natural":
        return flwr_natural(_require(name, "ids", ids, num_rows), seed=seed)
    if name in ("dirichlet", "flwr:dirichlet"):
        return PARTITIONERS[name](
            _require(name, "column", column, num_rows),
            num_clients,
            alpha=alpha,
            seed=seed,
            min_size=min_size,
        )
    if name == "dirichlet_capped":
        return dirichlet_capped(
            _require(name, "column", column, num_rows),
            num_clients,
            alpha=alpha,
            seed=seed,
            min_per_value=min_per_value,
        )
    return hetero(
        _require(name, "column", column, num_rows),
        _require(name, "labels", labels, num_rows),
        num_clients,
        seed=seed,
        low=low,
        high=high,
    )
