"""Message vocabulary that several methods share."""

from flwr.app import MessageType

# Metrics of every training reply: the client's weight in the mean (its number of training
# examples; FedNCF's positives) and its local loss.
NUM_EXAMPLES = "num-examples"
TRAIN_LOSS = "train-loss"

# Asked of every client once (strategies.base.PartitionedStrategy.ask_every_client): a table
# of non-negative integer counts under COUNT_TABLE, which the server sums. FedFACT: training rows
# per (sensitive group, label) [groups, classes]; FedRecGEL's EISAM: training interactions per
# item [num_items].
COUNTS = f"{MessageType.QUERY}.counts"
QUERIES = (COUNTS,)  # routed to the clients by fedsim.app.client_app
COUNT_TABLE = "counts"


def query_name(message_type: str) -> str:
    """"counts" of "query.counts": the name a client's query handler is registered under."""
    category, _, name = message_type.partition(".")
    if category != MessageType.QUERY or not name.isidentifier():
        raise ValueError(f"message type {message_type!r}: expected 'query.<name>'")
    return name
