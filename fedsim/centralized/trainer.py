"""The contract of a centralized recommendation method on the single-client pipeline."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from clients.ranking_eval import evaluate_users, means_from_sums
from fedsim.data import Interactions


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

    def score(self, model: torch.nn.Module, users: np.ndarray) -> torch.Tensor:
        """Scores of every item for each of ``users`` (global ids): [len(users), num_items]."""
        raise NotImplementedError

    def evaluate(self, model: torch.nn.Module) -> dict[str, float]:
        """Metrics of this client's users as (sum, count) pairs: ``name`` and ``name/n``.

        Pairs pool exactly over clients (:func:`pooled_means`). The base gives the leave-one-out
        HR/NDCG@10, sampled and full ranking, overall/head/tail, test and validation
        (:func:`clients.ranking_eval.evaluate_users`).
        """
        scores = _Scores(self.score(model, self.users))
        sums = evaluate_users(scores, self.data, self.users, self.spec["data.head_fraction"])
        metrics: dict[str, float] = {}
        for name in means_from_sums(sums):  # the metric names, not the counts
            metrics[name] = sums[name]
            metrics[f"{name}/n"] = _count_of(name, sums)
        return metrics


def _count_of(name: str, sums: Mapping[str, float]) -> float:
    """The user count a sum of :func:`evaluate_users` is divided by (its split and group)."""
    prefix = "val_" if name.startswith("val_") else ""
    group = next((g for g in ("_head", "_tail") if name.endswith(g)), "")
    return sums[f"{prefix}n{group}"]


class _Scores:
    """Adapter: evaluate_users asks a model for the scores of its local user rows."""

    def __init__(self, scores: torch.Tensor):
        self.scores = scores

    def score_all(self, local_rows: torch.Tensor) -> torch.Tensor:
        return self.scores[local_rows]


def pooled_means(replies: list[Mapping[str, float]]) -> dict[str, float]:
    """Pooled mean of every ``name``/``name/n`` pair over the clients' evaluation replies."""
    sums: dict[str, float] = {}
    for reply in replies:
        for name, value in reply.items():
            sums[name] = sums.get(name, 0.0) + float(value)
    return {name: (total / sums[f"{name}/n"] if sums[f"{name}/n"] else float("nan"))
            for name, total in sums.items() if f"{name}/n" in sums}
