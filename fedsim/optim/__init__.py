"""Optimiser helpers shared by clients and strategies."""

from fedsim.optim.sam import (group_perturbation, perturbation, perturbed, rowwise_perturbation,
                              sam_gradient)
from fedsim.optim.state import load_adam, save_adam

__all__ = ["group_perturbation", "load_adam", "perturbation", "perturbed", "rowwise_perturbation",
           "sam_gradient", "save_adam"]
