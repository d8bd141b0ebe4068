"""fedsim's partitioners served as flwr-datasets partitioners.

``FedsimPartitioner("dirichlet", num_partitions=10, column_by="label", alpha=0.5)`` plugs into
``FederatedDataset(partitioners={"train": ...})`` or takes a ``datasets.Dataset`` directly; its
``load_partition(k)`` returns the rows fedsim's partitioner gives client k, so a Flower app that
loads data with flwr-datasets gets fedsim's splits (the FedFACT authors' capped Dirichlet, the
Hetero split). This module imports flwr-datasets (seconds): fedsim itself never imports it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from datasets import Dataset
from flwr_datasets.partitioner import Partitioner

from fedsim.partition.flwr_partitioners import column_array
from fedsim.partition.registry import PARTITIONERS, make_partition


class FedsimPartitioner(Partitioner):
    """The fedsim partitioner called `name` (a key of PARTITIONERS) over the assigned dataset.

    Its arrays come from the dataset's columns: ``ids_by`` (natural), ``column_by`` (dirichlet,
    dirichlet_capped; hetero's sensitive attribute) and ``labels_by`` (hetero). ``options`` are
    :func:`~fedsim.partition.make_partition`'s parameters (alpha, min_size, ...).
    ``num_partitions`` is the number of clients; natural ignores it, its ids decide. The
    partition is computed once, on first use.
    """

    def __init__(self, name: str, *, num_partitions: int = 1, seed: int = 0,
                 ids_by: str | None = None, column_by: str | None = None,
                 labels_by: str | None = None, **options: Any) -> None:
        super().__init__()
        if name not in PARTITIONERS:
            raise ValueError(f"partitioner {name!r} is unknown; known: {sorted(PARTITIONERS)}")
        self._name, self._num_clients, self._seed = name, num_partitions, seed
        self._options = options
        self._columns = {"ids": ids_by, "column": column_by, "labels": labels_by}
        self._parts: list[np.ndarray] | None = None

    def _client_rows(self) -> list[np.ndarray]:
        if self._parts is None:
            arrays = {argument: self._column(column) for argument, column in self._columns.items()
                      if column is not None}
            self._parts = make_partition(self._name, num_rows=self.dataset.num_rows,
                                         num_clients=self._num_clients, seed=self._seed,
                                         **arrays, **self._options)
        return self._parts

    def _column(self, column: str) -> np.ndarray:
        if column not in self.dataset.column_names:
            raise ValueError(f"column {column!r} is not in the dataset; its columns are "
                             f"{self.dataset.column_names}")
        return column_array(self.dataset, column)

    def load_partition(self, partition_id: int) -> Dataset:
        parts = self._client_rows()
        if not 0 <= partition_id < len(parts):
            raise ValueError(f"partition_id={partition_id} is invalid; expected 0 <= id < "
                             f"{len(parts)}")
        return self.dataset.select(parts[partition_id])

    @property
    def num_partitions(self) -> int:
        return len(self._client_rows())
