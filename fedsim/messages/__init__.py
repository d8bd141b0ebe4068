"""The message vocabulary: the keys and message types a method's strategy and clients both use.

One small module per method (:mod:`.fedncf`, :mod:`.fedrecgel`, :mod:`.fedfact`,
:mod:`.fairfed`, :mod:`.fedfb`), plus what several methods share (:mod:`.common`: the training
reply's metrics, the ask-once ``query.counts``; :mod:`.fedavg`: the classification evaluation
reply; :mod:`.ranking`: the recommendation evaluation reply). Strategies and clients import the
names from here, never from each other, so each key is spelled once. How the records that hold
them are laid out (one message per node, per-client packing, sums) is :mod:`fedsim.protocol`.
"""

import importlib
import pkgutil


def queries() -> list[str]:
    """Every query message type ("query.<name>") a vocabulary module declares (its
    ``QUERIES``): the ClientApp routes each of them to its one query handler."""
    declared = set()
    for module in pkgutil.iter_modules(__path__):
        declared.update(getattr(importlib.import_module(f"{__name__}.{module.name}"),
                                "QUERIES", ()))
    return sorted(declared)
