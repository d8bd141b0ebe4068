"""The contract of a centralized recommendation method on the single-client pipeline."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from fedsim.data import Interactions
from fedsim.metrics.leave_one_out import ScoreMatrix, evaluate_users


class Trainer:
    """One centralized method: what the client does with its users' data each round.

    A subclass implements :meth:`build_model`, :meth:`train_epoch` and :meth:`score`; it may
    extend :meth:`evaluate` with its own metrics. The optimizer is Adam (or AdamW), because
    its state must round-trip through the client's private store between rounds
    (:mod:`fedsim.optim.state`).

    ``data`` is the whole dataset and ``users`` the users this client holds (all of them with
    the ``single`` partitioner).
    """

    def __init__(self, spec: Mapping[str, Any], data: Interactions, users: np.ndarray):
        self.spec = spec
        self.data = data
        self.users = users

    def build_model(self) -> torch.nn.Module:
        """A freshly initialised model (the caller seeds torch)."""
        raise NotImplementedError

    def make_optimizer(self, model: torch.nn.Module) -> torch.optim.Adam:
        return torch.optim.Adam(model.parameters(), lr=self.spec["central.lr"],
                                weight_decay=self.spec["central.weight_decay"])

    def num_examples(self) -> int:
        """Weight of this client in the average: its training interactions."""
        return int(sum(len(self.data.user_items(int(u))) for u in self.users))

    def train_epoch(self, model: torch.nn.Module, optimizer: torch.optim.Adam,
                    rng: np.random.Generator) -> float:
        """One pass over this client's training data, in place; returns the mean loss.

        Every random choice (batch order, negatives) comes from ``rng``; torch's global
        generator (dropout) is seeded by the caller. Both are functions of (seed, partition,
        round), so a resumed or re-run round repeats exactly.
        """
        raise NotImplementedError

    def begin_epoch(self, epoch: int, private: dict[str, np.ndarray]) -> None:
        """Called before :meth:`train_epoch` with the epoch number (the round, from 1) and the
        arrays :meth:`private_state` returned after the previous epoch ({} at first).

        For a method whose schedule depends on the epoch or that carries arrays from one epoch
        to the next (RAID's transport targets): the trainer object may not survive between
        rounds (any Ray actor may serve the client), the private store does.
        """

    def private_state(self) -> dict[str, np.ndarray]:
        """Arrays to keep in the client's private store until the next epoch."""
        return {}

    def score(self, model: torch.nn.Module, users: np.ndarray) -> torch.Tensor:
        """Scores of every item for each of ``users`` (global ids): [len(users), num_items]."""
        raise NotImplementedError

    def score_validation(self, model: torch.nn.Module, users: np.ndarray) -> torch.Tensor | None:
        """Scores that rank the validation item, when they differ from :meth:`score`'s (which
        rank the test item): a sequential model's input for the test item holds the validation
        item. None (the default) = :meth:`score`'s rank both."""
        return None

    def user_embeddings(self, model: torch.nn.Module) -> np.ndarray:
        """The user embeddings the model exposes, [len(users), d] in the order of ``users``:
        what the attribute-inference audit (:mod:`fedsim.audit`) attacks."""
        raise NotImplementedError(f"{type(self).__name__} does not say which parameters are its "
                                  "user embeddings (Trainer.user_embeddings), so it cannot be "
                                  "audited")

    def evaluate(self, model: torch.nn.Module) -> dict[str, float]:
        """Metrics of this client's users as (sum, count) pairs: ``name`` and ``name/n``.

        Pairs pool exactly over clients (:mod:`fedsim.metrics.pooling`). The base gives the
        leave-one-out HR/NDCG@10, sampled and full ranking, overall/head/tail, test and
        validation (:func:`fedsim.metrics.leave_one_out.evaluate_users`).
        """
        return self.evaluate_scores(self.score(model, self.users),
                                    self.score_validation(model, self.users))

    def evaluate_scores(self, scores: torch.Tensor,
                        val_scores: torch.Tensor | None = None) -> dict[str, float]:
        """:meth:`evaluate` from the users' scores, computed once: a subclass adding metrics
        extends this and reuses them. ``val_scores``: see :meth:`score_validation`."""
        return evaluate_users(ScoreMatrix(scores), self.data, self.users,
                              self.spec["data.head_fraction"],
                              val_model=None if val_scores is None else ScoreMatrix(val_scores))

