"""What every recommendation backbone shares, and the backbones by spec name.

Federated recommenders split a model by ownership: user tables are private to the client that
holds the users, item tables are sent row by row (only the rows a client touches), and the rest
is dense shared state. A backbone declares that split as class attributes, so clients and
strategies work on any backbone without knowing its architecture
(:func:`fedsim.models.backbones.backbone` picks one by spec name).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
from torch import nn


class Recommender(nn.Module):
    """Base of the backbones: ownership of the tables and the generic array round trip.

    A subclass takes ``(num_users, num_items, **sizes)``, names its embedding modules after its
    tables (``user_gmf`` for "user_gmf.weight"), and implements :meth:`sizes_of`, ``forward``
    (logits of (user row, item row) pairs) and ``score_all`` (logits of every item per user).
    """

    USER_TABLES: tuple[str, ...] = ()
    ITEM_TABLES: tuple[str, ...] = ()
    SHARED_PREFIXES: tuple[str, ...] = ()
    # Full ranking scores items in blocks until each user's rank is known to reach K
    # (fedsim.metrics.leave_one_out.capped_full_ranks) rather than every item at once: worth it
    # where a pair costs far more than the blocks' bookkeeping.
    RANK_IN_BLOCKS = False

    @classmethod
    def split(cls, state: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Split a state dict (or gradients keyed like one) into (shared, private)."""
        shared = {k: v for k, v in state.items() if k.startswith(cls.SHARED_PREFIXES)}
        private = {k: v for k, v in state.items() if not k.startswith(cls.SHARED_PREFIXES)}
        return shared, private

    @classmethod
    def sizes_of(cls, arrays: Mapping[str, np.ndarray]) -> dict[str, int]:
        """Constructor sizes read off a full state dict."""
        raise NotImplementedError

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> "Recommender":
        """A model holding exactly `arrays` (a full state dict: local user and item rows).

        Sizes are read off the arrays and the embedding tables wrap them without the random
        initialisation a fresh module would spend on tables it overwrites at once. Each array
        is copied once: the model's parameters are the copies (``assign``), not copied again
        into the parameters of the empty module (an evaluation's model holds the whole item
        table and the user rows of thousands of clients).
        """
        model = cls(0, 0, **cls.sizes_of(arrays))
        tensors = {k: torch.tensor(v) for k, v in arrays.items()}
        for name in cls.USER_TABLES + cls.ITEM_TABLES:
            setattr(model, name.removesuffix(".weight"),
                    nn.Embedding.from_pretrained(tensors[name], freeze=False))
        model.load_state_dict(tensors, assign=True)  # checks names and shapes, as without
        return model

    def score_candidates(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Logits of each user's candidate items: ``users`` [n] local rows, ``items`` [n, c]
        local item rows; returns [n, c]. Costs c pairs per user where ``score_all`` costs every
        item (the sampled protocol scores 100 candidates)."""
        pairs = self(users[:, None].expand_as(items).reshape(-1), items.reshape(-1))
        return pairs.reshape(items.shape)
