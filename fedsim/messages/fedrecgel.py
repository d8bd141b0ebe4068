"""Vocabulary FedRecGEL adds to :mod:`.fedncf`'s (EISAM mode; its counts are
:data:`.common.COUNTS`, one int64 count per item)."""

# Per-client training array: EISAM weight of every item row sent, float32 [n], aligned with
# the client's "item_ids".
ITEM_BETA = "item_beta"
