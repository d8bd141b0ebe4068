"""Optimiser helpers shared by clients and strategies."""

from fedsim.optim.eisam import frequency_weights, item_row_penalty, weighted_sam_gradient
from fedsim.optim.sam import (group_perturbation, perturbation, perturbed, rowwise_perturbation,
                              sam_gradient)
from fedsim.optim.state import load_adam, save_adam

__all__ = ["frequency_weights", "group_perturbation", "item_row_penalty", "load_adam",
           "perturbation", "perturbed", "rowwise_perturbation", "sam_gradient", "save_adam",
           "weighted_sam_gradient"]
