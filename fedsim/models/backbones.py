"""Recommendation backbones by spec ``model`` name, sized by the spec table of that name.

``[neumf] factor_dim = 32`` becomes ``NeuMF(..., factor_dim=32)``: a backbone's spec table
holds exactly its constructor sizes, so adding a backbone needs no change here beyond its name.
"""

from __future__ import annotations

from typing import Any, Mapping

from fedsim.models.mf import MF
from fedsim.models.neumf import NeuMF
from fedsim.models.recommender import Recommender

RECOMMENDERS: dict[str, type[Recommender]] = {"neumf": NeuMF, "mf": MF}


def backbone(spec: Mapping[str, Any]) -> tuple[type[Recommender], dict[str, Any]]:
    """The spec's backbone class and its constructor sizes (the keys of its spec table)."""
    name = spec["model"]
    sizes = {k.partition(".")[2]: v for k, v in spec.items() if k.startswith(f"{name}.")}
    return RECOMMENDERS[name], sizes
