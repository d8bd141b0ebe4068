"""Flower entry points: the ServerApp and ClientApp named in pyproject's [tool.flwr.app]."""
