"""Plain SASRec on the single-client pipeline: next-item full-softmax cross-entropy.

Training data (our choice, documented in docs/centralized.md): each user's training items in
time order (:meth:`fedsim.data.Interactions.user_sequence`), cut from the newest end into
windows of ``max_len + 1`` items that overlap by one item, so every training item after a
user's first is a target exactly once per epoch; the original SASRec keeps only the newest
window. A window's inputs are its first ``max_len`` items and its targets the next ones
(left-padded). The loss is the mean cross-entropy over all items at every target position.

Ranking (leave-one-out, full ranking): the validation item is scored from the training
sequence, the test item from the training sequence plus the validation item, as SASRec's own
evaluation does; only the newest ``max_len`` items are read.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from fedsim.centralized.trainer import Trainer
from fedsim.data import Interactions
from fedsim.models.sasrec import SASRec

SCORE_CHUNK = 512  # users scored at once (bounds the [users, num_items] working set)


def training_windows(sequences: list[np.ndarray], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets), int64 ``[windows, max_len]`` item rows (item id + 1, 0 = padding).

    Every sequence is cut from its end into windows of at most ``max_len + 1`` items, each
    window starting at the last item of the one before it, so each item but the first of a
    sequence is a target exactly once.
    """
    inputs, targets = [], []
    for sequence in sequences:
        end = len(sequence)
        while end > 1:
            start = max(0, end - max_len - 1)
            window = sequence[start:end] + 1
            inputs.append(_left_pad(window[:-1], max_len))
            targets.append(_left_pad(window[1:], max_len))
            end = start + 1
    return np.array(inputs, dtype=np.int64), np.array(targets, dtype=np.int64)


def _left_pad(rows: np.ndarray, length: int) -> np.ndarray:
    padded = np.zeros(length, dtype=np.int64)
    padded[length - len(rows):] = rows
    return padded


class SASRecTrainer(Trainer):
    """SASRec (``model = "sasrec"``) sized by ``central.dim`` and the ``sasrec.*`` keys; one
    epoch = every training window once, in batches of ``central.batch_size`` windows.
    Subclasses change :meth:`step` (how one batch updates the model)."""

    def __init__(self, spec: Mapping[str, Any], data: Interactions, users: np.ndarray):
        super().__init__(spec, data, users)
        self.max_len = spec["sasrec.max_len"]
        self.inputs, self.targets = training_windows(
            [data.user_sequence(int(u)) for u in users], self.max_len)

    def build_model(self) -> SASRec:
        return SASRec(self.data.num_items, dim=self.spec["central.dim"],
                      blocks=self.spec["sasrec.blocks"], heads=self.spec["sasrec.heads"],
                      max_len=self.max_len, dropout=self.spec["sasrec.dropout"])

    def train_epoch(self, model: SASRec, optimizer: torch.optim.Adam,
                    rng: np.random.Generator) -> float:
        order = rng.permutation(len(self.inputs))
        total, count = 0.0, 0
        for start in range(0, len(order), self.spec["central.batch_size"]):
            batch = order[start:start + self.spec["central.batch_size"]]
            inputs = torch.from_numpy(self.inputs[batch])
            targets = torch.from_numpy(self.targets[batch])
            n = int((targets > 0).sum())
            total += self.step(model, optimizer, inputs, targets) * n
            count += n
        return total / count

    def step(self, model: SASRec, optimizer: torch.optim.Adam, inputs: torch.Tensor,
             targets: torch.Tensor) -> float:
        """One Adam step on a batch; returns its mean cross-entropy."""
        losses, _, _ = self.sample_losses(model, inputs, targets)
        loss = losses.mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    @staticmethod
    def sample_losses(model: SASRec, inputs: torch.Tensor, targets: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per target position: cross-entropy ``[n]``, hidden state ``[n, d]``, item id ``[n]``."""
        at = targets > 0
        hidden = model.hidden(inputs)[at]
        items = targets[at] - 1
        losses = F.cross_entropy(hidden @ model.item_table().T, items, reduction="none")
        return losses, hidden, items

    def score(self, model: SASRec, users: np.ndarray) -> torch.Tensor:
        """Scores for the test item: the input ends with the validation item, if held out."""
        return self._score(model, users, self.data.val_items)

    def score_validation(self, model: SASRec, users: np.ndarray) -> torch.Tensor | None:
        """Scores for the validation item: the input is the training sequence alone."""
        return None if self.data.val_items is None else self._score(model, users, None)

    def _score(self, model: SASRec, users: np.ndarray, appended: np.ndarray | None
               ) -> torch.Tensor:
        rows = np.zeros((len(users), self.max_len), dtype=np.int64)
        for k, user in enumerate(users):
            sequence = self.data.user_sequence(int(user))
            if appended is not None:
                sequence = np.append(sequence, appended[user])
            rows[k] = _left_pad(sequence[-self.max_len:] + 1, self.max_len)
        rows = torch.from_numpy(rows)
        table = model.item_table()
        return torch.cat([model.hidden(rows[start:start + SCORE_CHUNK])[:, -1] @ table.T
                          for start in range(0, len(rows), SCORE_CHUNK)])
