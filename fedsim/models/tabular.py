"""Classifiers for tabular fairness tasks: logistic regression and a one-hidden-layer MLP."""

from __future__ import annotations

from torch import nn


def make_classifier(name: str, num_features: int, num_classes: int, hidden: int = 32) -> nn.Module:
    """Logits model; 'logreg' is a single linear layer (multinomial logistic regression)."""
    if name == "logreg":
        return nn.Sequential(nn.Linear(num_features, num_classes))
    if name == "mlp":
        return nn.Sequential(nn.Linear(num_features, hidden), nn.ReLU(),
                             nn.Linear(hidden, num_classes))
    raise ValueError(f"model {name!r}: expected 'logreg' or 'mlp'")
