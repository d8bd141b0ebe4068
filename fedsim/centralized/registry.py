"""Centralized methods by spec ``method`` name: a method = a Trainer subclass + an entry here
(and the name in fedsim/spec.py METHOD_TASKS)."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from fedsim.centralized.aurl import AURLTrainer
from fedsim.centralized.eisam import EISAMTrainer
from fedsim.centralized.raid import RAIDTrainer
from fedsim.centralized.sasrec import SASRecTrainer
from fedsim.centralized.trainer import Trainer
from fedsim.data import Interactions

TRAINERS: dict[str, type[Trainer]] = {"aurl": AURLTrainer, "sasrec": SASRecTrainer,
                                      "eisam": EISAMTrainer, "raid": RAIDTrainer}


def make_trainer(spec: Mapping[str, Any], data: Interactions, users: np.ndarray) -> Trainer:
    return TRAINERS[spec["method"]](spec, data, users)
