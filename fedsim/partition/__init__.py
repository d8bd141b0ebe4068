"""Client partitioners (row index arrays per client) and their name registry."""

from fedsim.partition.partitioners import (
    dirichlet,
    dirichlet_capped,
    dirichlet_proportions,
    hetero,
    iid,
    natural_id,
    single,
)
from fedsim.partition.registry import COLUMN_PARTITIONERS, PARTITIONERS, make_partition

__all__ = [
    "COLUMN_PARTITIONERS",
    "PARTITIONERS",
    "dirichlet",
    "dirichlet_capped",
    "dirichlet_proportions",
    "hetero",
    "iid",
    "make_partition",
    "natural_id",
    "single",
]
