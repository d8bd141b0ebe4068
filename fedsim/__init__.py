"""fedsim: federated-learning simulation on Flower's Message API and Ray."""

__version__ = "0.1.0"
