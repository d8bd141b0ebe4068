"""A spec's dataset cut into clients: what the server and every client agree on.

Both sides call :func:`load_federation` with the same spec and get the same partition, because
loading and partitioning are deterministic in the spec (``data.seed`` for data preparation,
``seed`` for the partition). The result is cached per process: a Ray actor serves many
simulated clients and must not reload the data for each message.

What each side uses: the server only needs public sizes (number of clients, items, features,
classes); a client uses its own partition. In a real deployment each node would load only its
own data; in simulation every actor process holds the whole (small) dataset once.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from fedsim.data import DATASETS, Interactions, Tabular, load_dataset
from fedsim.partition import COLUMN_PARTITIONERS, make_partition
from fedsim.spec import SpecError

# Spec keys that change the data or the partition (the cache key).
_DATA_KEYS = ("dataset", "data_dir", "data.seed", "data.protocol", "data.test_negatives",
              "data.synthetic_users", "data.path", "data.format", "data.user_column",
              "data.item_column", "data.time_column", "data.rating_column", "data.min_rating",
              "data.label_column", "data.sensitive_column",
              "data.test_fraction", "partitioner", "num_clients", "seed", "partition.ids_per_client",
              "partition.column", "partition.alpha", "partition.min_size",
              "partition.min_per_value", "partition.low",
              "partition.high")


@dataclass(frozen=True, eq=False)
class Federation:
    """The dataset and, per client, the rows it holds.

    For recommendation a row is a user (``train_parts[k]`` = user ids of client k, and
    ``test_parts`` is the same list: a user's test item stays with the user). For tabular
    data a row is a sample; ``train_parts[k]`` indexes the training split and
    ``test_parts[k]`` the test split.
    """

    dataset: Interactions | Tabular
    train_parts: list[np.ndarray]
    test_parts: list[np.ndarray]

    @property
    def task(self) -> str:
        return "recommendation" if isinstance(self.dataset, Interactions) else "classification"

    @property
    def num_clients(self) -> int:
        return len(self.train_parts)


def spec_key(spec: Mapping[str, Any]) -> str:
    return json.dumps({k: spec[k] for k in _DATA_KEYS}, sort_keys=True)


def load_federation(spec: Mapping[str, Any]) -> Federation:
    return _load_cached(spec_key(spec))


@functools.lru_cache(maxsize=4)
def _load_cached(key: str) -> Federation:
    spec = json.loads(key)
    data_dir = spec["data_dir"] or None
    info = DATASETS[spec["dataset"]]
    own = {argument: spec[key] for argument, key in info.spec_keys.items()}
    if info.task == "recommendation":
        data = load_dataset(spec["dataset"], data_dir, protocol=spec["data.protocol"], **own,
                            num_negatives=spec["data.test_negatives"], seed=spec["data.seed"])
        parts = _partition_users(data, spec)
        return Federation(data, parts, parts)
    data = load_dataset(spec["dataset"], data_dir, seed=spec["data.seed"], **own,
                        test_fraction=spec["data.test_fraction"])
    # One partition over train and test rows together, then split back: each client's test
    # rows follow the same value proportions as its training rows (same Dirichlet draw, same
    # hetero correlation), and min_size counts a client's rows of both splits.
    n_train = len(data.y_train)
    parts = _partition_samples(np.concatenate([data.y_train, data.y_test]),
                               np.concatenate([data.s_train, data.s_test]), spec)
    return Federation(data, [p[p < n_train] for p in parts], [p[p >= n_train] - n_train
                                                               for p in parts])


def _partition_users(data: Interactions, spec: Mapping[str, Any]) -> list[np.ndarray]:
    users = np.arange(data.num_users)
    column = None
    if spec["partitioner"] in COLUMN_PARTITIONERS:
        name = spec["partition.column"]
        if name not in data.user_attributes:
            raise SpecError(f"partition.column = {name!r}: dataset {spec['dataset']!r} has user "
                            f"attributes {sorted(data.user_attributes) or 'none'}")
        column = data.user_attributes[name]
    parts = make_partition(spec["partitioner"], num_rows=data.num_users,
                           num_clients=spec["num_clients"] or 1, seed=spec["seed"], ids=users,
                           column=column, alpha=spec["partition.alpha"],
                           min_size=spec["partition.min_size"],
                           min_per_value=spec["partition.min_per_value"],
                           ids_per_client=spec["partition.ids_per_client"])
    _check_client_count(spec, len(parts), data.num_users, "users")
    return parts


def _partition_samples(labels: np.ndarray, sensitive: np.ndarray,
                       spec: Mapping[str, Any]) -> list[np.ndarray]:
    columns = {"sensitive": sensitive, "label": labels}
    if (spec["partitioner"] in COLUMN_PARTITIONERS
            and spec["partition.column"] not in columns):
        raise SpecError(f"partition.column = {spec['partition.column']!r}: tabular data can be "
                        "split on 'sensitive' or 'label'")
    parts = make_partition(spec["partitioner"], num_rows=len(labels),
                           num_clients=spec["num_clients"] or 1, seed=spec["seed"],
                           column=columns.get(spec["partition.column"]), labels=labels,
                           alpha=spec["partition.alpha"], min_size=spec["partition.min_size"],
                           min_per_value=spec["partition.min_per_value"],
                           low=spec["partition.low"], high=spec["partition.high"])
    _check_client_count(spec, len(parts), len(labels), "rows")
    return parts


def _check_client_count(spec: Mapping[str, Any], made: int, rows: int, unit: str) -> None:
    asked = spec["num_clients"]
    if asked and asked != made:
        raise SpecError(f"num_clients = {asked}: partitioner {spec['partitioner']!r} made {made} "
                        f"clients from {rows} {unit}; set num_clients = 0 (derive) or {made}")

