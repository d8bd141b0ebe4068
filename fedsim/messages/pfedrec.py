"""Vocabulary of PFedRec: FedNCF's row request and row ids, and its own item-table rows.

Layouts and message sequence: :mod:`strategies.pfedrec`.
"""

from fedsim.messages.fedncf import ITEM_IDS, ROWS

__all__ = ["ITEM_IDS", "ITEM_TABLE", "ROWS"]

# float32 [n, dim]: in training, the rows of the global item table sent to a client (per client,
# under ITEM_IDS) and their change it uploads; in evaluation, the whole table every client gets.
ITEM_TABLE = "item_table"
