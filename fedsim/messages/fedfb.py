"""Vocabulary of FedFB."""

from flwr.app import MessageType

# Asked of every client before each round: with the global model in the shared arrays, its
# training rows per (group, label) cell under common.COUNT_TABLE (int64) and the model's
# cross-entropy sums per cell under LOSS_TABLE (float64), both [groups, classes].
GROUP_LOSSES = f"{MessageType.QUERY}.group_losses"
QUERIES = (GROUP_LOSSES,)  # routed to the clients by fedsim.app.client_app
LOSS_TABLE = "losses"

# Shared train array beside the model: the loss weight of each cell [groups, classes].
WEIGHTS = "fedfb.weights"
# Train reply metric: the client's total row weight, its weight in the model average.
WEIGHT_SUM = "weight-sum"
