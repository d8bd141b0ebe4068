"""Models shared by federated and centralized runs."""

from fedsim.models.neumf import NeuMF, SHARED_PREFIXES, split_shared_private
from fedsim.models.tabular import make_classifier

__all__ = ["NeuMF", "SHARED_PREFIXES", "split_shared_private", "make_classifier"]
