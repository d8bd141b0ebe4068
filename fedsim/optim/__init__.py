"""Optimiser helpers shared by clients and strategies."""

from fedsim.optim.state import load_adam, save_adam

__all__ = ["load_adam", "save_adam"]
