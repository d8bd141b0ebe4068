"""Vocabulary of the classification methods' evaluation (FedAvg, FairFed, FedFB, FedFACT)."""

# Evaluation reply: confusion counts per sensitive group, int64 [groups, classes, classes].
CONFUSION = "confusion"
