"""Vocabulary of FairFed (the rest of its messages are FedAvg's)."""

# Train reply array, beside the model: confusion counts per sensitive group of the received
# global model on the client's training rows, int64 [groups, classes, classes].
FAIRNESS_COUNTS = "fairness_counts"
