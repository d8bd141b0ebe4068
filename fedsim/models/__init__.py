"""Models shared by federated and centralized runs."""

from fedsim.models.backbones import RECOMMENDERS, backbone
from fedsim.models.mf import MF
from fedsim.models.neumf import NeuMF
from fedsim.models.recommender import Recommender
from fedsim.models.tabular import make_classifier

__all__ = ["MF", "NeuMF", "RECOMMENDERS", "Recommender", "backbone", "make_classifier"]
