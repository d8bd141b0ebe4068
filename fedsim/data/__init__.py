"""Datasets of fedsim: recommendation interactions (leave-one-out) and tabular fairness tasks."""

from fedsim.data.files import DataError, resolve_data_dirs
from fedsim.data.interactions import Interactions
from fedsim.data.registry import DATASETS, DatasetInfo, data_files, load_dataset
from fedsim.data.tabular import Tabular

__all__ = ["DATASETS", "DataError", "DatasetInfo", "Interactions", "Tabular", "data_files", "load_dataset", "resolve_data_dirs"]
