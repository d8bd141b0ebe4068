"""flwr-datasets' partitioners as fedsim partitioners: same signatures as fedsim's, row indices out.

A spec names them "flwr:iid", "flwr:natural" and "flwr:dirichlet"
(:data:`fedsim.partition.registry.PARTITIONERS`). Each builds a Hugging Face ``Dataset`` holding
the row numbers and the column to split on, shuffles it with ``seed`` as flwr-datasets'
``FederatedDataset`` does before partitioning (its ``IidPartitioner`` cuts contiguous shards, so
unshuffled rows would not be iid), lets the flwr-datasets partitioner cut it, and returns each
partition's row numbers, sorted, as fedsim's partitioners do.

flwr-datasets is imported on first use only: importing it (Hugging Face datasets, pyarrow) takes
seconds, which every simulated client process would otherwise pay.
"""

from __future__ import annotations

import numpy as np

from fedsim.partition.partitioners import _check_1d, _check_clients

ROW = "fedsim_row"  # carries each row's number through the flwr-datasets partitioner


def column_array(dataset, name: str) -> np.ndarray:
    """One column of a Hugging Face Dataset as a NumPy array (read in one go: np.asarray on the
    column object reads it value by value, seconds for 100k rows)."""
    return dataset.with_format("numpy")[name][:]


def _row_parts(partitioner, num_rows: int, seed: int, columns: dict[str, np.ndarray] | None = None,
               ) -> list[np.ndarray]:
    from datasets import Dataset

    rows = Dataset.from_dict({ROW: np.arange(num_rows), **(columns or {})})
    partitioner.dataset = rows.shuffle(seed=seed)
    return [np.sort(column_array(partitioner.load_partition(k), ROW).astype(np.int64))
            for k in range(partitioner.num_partitions)]


def flwr_iid(num_rows: int, num_clients: int, *, seed: int) -> list[np.ndarray]:
    """flwr-datasets' ``IidPartitioner``: near-equal contiguous shards of the shuffled rows."""
    from flwr_datasets.partitioner import IidPartitioner

    _check_clients(num_clients, num_rows)
    return _row_parts(IidPartitioner(num_partitions=num_clients), num_rows, seed)


def flwr_natural(ids: np.ndarray, *, seed: int = 0) -> list[np.ndarray]:
    """flwr-datasets' ``NaturalIdPartitioner``: one client per distinct id, in sorted id order
    (``seed`` only shuffles the rows first, which changes no client's set)."""
    from flwr_datasets.partitioner import NaturalIdPartitioner

    ids = _check_1d("ids", ids)
    return _row_parts(NaturalIdPartitioner(partition_by="id"), ids.size, seed, {"id": ids})


def flwr_dirichlet(column: np.ndarray, num_clients: int, *, alpha: float, seed: int,
                   min_size: int = 10) -> list[np.ndarray]:
    """flwr-datasets' ``DirichletPartitioner`` on the values of ``column``: Dir(alpha) shares per
    value, redrawn (at most 10 times, then an error) until every client has ``min_size`` rows."""
    from flwr_datasets.partitioner import DirichletPartitioner

    column = _check_1d("column", column)
    _check_clients(num_clients, column.size)
    partitioner = DirichletPartitioner(num_partitions=num_clients, partition_by="value",
                                       alpha=float(alpha), min_partition_size=min_size, seed=seed)
    try:
        return _row_parts(partitioner, column.size, seed, {"value": column})
    except ValueError as err:
        raise ValueError(f"flwr:dirichlet (flwr-datasets' DirichletPartitioner) with "
                         f"alpha={alpha}, min_size={min_size}, num_clients={num_clients}: "
                         f"{err}") from None
