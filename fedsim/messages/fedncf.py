"""Vocabulary of FedNCF / FedMF (and FedRecGEL, which adds :mod:`.fedrecgel`'s).

Layouts and message sequence: :mod:`strategies.fedncf`.
"""

from flwr.app import MessageType

# Asked of each sampled client before training: which item rows its round sample needs.
ROWS = f"{MessageType.QUERY}.rows"
QUERIES = (ROWS,)  # routed to the clients by fedsim.app.client_app
# int64 [n], sorted: the row request's reply, and in training the rows sent and uploaded.
ITEM_IDS = "item_ids"
