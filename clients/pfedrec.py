"""PFedRec client: one user's score function and personal item table (Zhang et al., IJCAI 2023).

The authors' public code as ../shared/research/pfedrec.md describes it. A client is one user u;
it scores an item by ``sigmoid(w_u . e + b_u)`` with its own score function (w_u, b_u: a
Linear(dim, 1)) and the item's row e of an item table. The server averages the item tables the
clients fine-tuned (strategies/pfedrec.py); each client also keeps its own fine-tuned table and
ranks with it (the "dual personalization").

A round (engine.py's fed_train_a_round):
- samples: every training positive, each followed by ``train_negatives`` distinct items drawn
  from those the user never rated (its validation and test items excluded too), drawn afresh
  each round; ``local_epochs`` shuffled passes in batches of ``batch_size``;
- each batch takes two plain SGD steps on the authors' loss, BCE on sigmoid scores: (1) on
  (w_u, b_u) with ``client_lr``; (2) after a fresh forward pass, on the item rows with
  ``client_lr x num_items x lr_eta`` (an item row is moved by its own samples only, the score
  function by all of them: the author's reason for the large step);
- upload: the change of the item rows it was sent (zero where no sample touched a row), so the
  server's mean of the deltas is the authors' mean of the tables (untouched rows are the global
  table's).

BCE on the sigmoid, not on the logits, as the authors: a float32 sigmoid that rounds to 0 or 1
then gives a zero gradient (the large item step saturates some), where BCE-with-logits would not.

What never leaves the client: w_u, b_u and its personal item rows. The authors upload b_u too
and the server averages it, but no client ever loads the average back (a client loads its own
stored parameters and only the global item table), so b_u is local in effect: it stays here,
which computes the same.

Personal item table under partial participation
------------------------------------------------
The personal table after training in round s is the global table E_{s-1} the client received
plus its changes on the rows it touched. Storing all of it per client is too much (Amazon-Video:
1.5 MB x 8,072 clients), and the server does not keep E_{s-1} for a client that next evaluates
rounds later. So the row request of a round asks for the touched rows *and* the rows of the
client's evaluation candidates (validation and test items and their 198 negatives), and the
private store keeps exactly those rows of the personal table (``item_ids``, ``item_rows``):
sampled evaluation is then exact whatever the participation. Full ranking needs every row: it
takes the stored rows and, for the others, the table the server sends for evaluation, which is
the global table the round's trainees started from (E_{r-1} at round r): exact for a client that
trained in round r, so for every client under full participation (the authors' setting); a
client that last trained in an earlier round s gets E_{r-1} in place of E_{s-1} on the rows it
neither touched nor samples against. The price of the candidate rows: 200 more rows each way per
client and round, and the server learns a 200-item set holding the client's validation and test
items (it already learns the training positives: the rows asked for every round).

A client that never trained ranks with the initial model (the authors evaluate such a user with
their untouched initial model: initial score function and initial item table).

Cohort mode (:mod:`clients.cohort`): :meth:`PFedRecClient.train_batch` takes the j-th batch of
every client of a pass at once (each with its own rows, score function and sample order; a
client with fewer batches is masked out of the later steps), and
:meth:`PFedRecClient.evaluate_batch` ranks them together (full ranking: one product of the item
table with all their score functions). Both agree with the clients run one by one to float
tolerance (tests/test_pfedrec.py).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from clients import cohort
from clients.fedncf import distinct_negatives
from fedsim.metrics.leave_one_out import evaluate_user_groups, evaluate_users
from fedsim.federation import load_federation
from fedsim.messages.common import NUM_EXAMPLES, TRAIN_LOSS
from fedsim.messages.pfedrec import ITEM_IDS, ITEM_TABLE
from fedsim.models.pfedrec import initial_model

Arrays = dict[str, np.ndarray]


def bce(rows: torch.Tensor, w: torch.Tensor, b: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The authors' loss: mean BCE of sigmoid(rows . w + b) (torch's BCELoss, logs clamped),
    the logits summed as their nn.Linear does (the item step amplifies rounding differences)."""
    logits = torch.nn.functional.linear(rows, w[None], b)[:, 0]
    return torch.nn.functional.binary_cross_entropy(torch.sigmoid(logits), labels)


class PFedRecClient:
    """One user: its round samples, its two-step local update and its personal evaluation."""

    def __init__(self, spec: Mapping[str, Any], partition_id: int):
        federation = load_federation(spec)
        self.data = federation.dataset
        self.users = federation.train_parts[partition_id]
        if len(self.users) != 1:
            raise ValueError(f"pfedrec: partition {partition_id} holds {len(self.users)} users; a "
                             "PFedRec client is one user (partitioner = 'natural', "
                             "partition.ids_per_client = 1)")
        self.user = int(self.users[0])
        self.partition_id = partition_id
        self.seed = spec["seed"]
        self.dim = spec["pfedrec.dim"]
        self.lr = spec["pfedrec.client_lr"]
        self.item_lr = self.lr * self.data.num_items * spec["pfedrec.lr_eta"]
        self.batch_size = spec["pfedrec.batch_size"]
        self.negatives = spec["pfedrec.train_negatives"]
        self.epochs = spec["pfedrec.local_epochs"]
        self.head_fraction = spec["data.head_fraction"]
        self.full_every, self.rounds = spec["eval_full_every"], spec["rounds"]
        self._last_sample: tuple[int, tuple] = (-1, ())

    # --- the round sample ---------------------------------------------------------------------
    def held_out(self) -> np.ndarray:
        """The user's validation and test items (those its split has)."""
        splits = (self.data.val_items, self.data.test_items)
        return np.array([items[self.user] for items in splits if items is not None], np.int64)

    def candidates(self) -> np.ndarray:
        """Every item the sampled evaluation scores for this user, sorted."""
        negatives = (self.data.val_negatives, self.data.test_negatives)
        return np.unique(np.concatenate([self.held_out(), *(n[self.user] for n in negatives
                                                            if n is not None)]))

    def round_sample(self, server_round: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """(item ids, labels, one sample order per local epoch) of this round; a pure function of
        (seed, partition, round), kept for the round (the row request and training both need it)."""
        if self._last_sample[0] != server_round:
            self._last_sample = (server_round, self._draw_sample(server_round))
        return self._last_sample[1]

    def _draw_sample(self, server_round: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        rng = np.random.default_rng([self.seed, self.partition_id, server_round])
        positives = self.data.user_items(self.user)
        rated = np.concatenate([positives, self.held_out()])
        negatives = distinct_negatives(rng, np.unique(rated), self.data.num_items,
                                       len(positives), self.negatives)
        items = np.concatenate([positives[:, None], negatives], axis=1).reshape(-1)
        labels = np.tile(np.float32([1] + [0] * self.negatives), len(positives))
        return items, labels, [rng.permutation(len(items)) for _ in range(self.epochs)]

    def needed_items(self, server_round: int) -> np.ndarray:
        """Rows asked for before training: those the round's samples touch and the evaluation
        candidates' (kept in the private store, see the module docstring)."""
        return np.union1d(self.round_sample(server_round)[0], self.candidates())

    def query_rows(self, shared: Arrays, own: Arrays, state, server_round: int
                   ) -> tuple[Arrays, dict[str, float]]:
        """The reply to the server's ``query.rows`` before training: :meth:`needed_items`."""
        return {ITEM_IDS: self.needed_items(server_round)}, {}

    # --- message handlers -------------------------------------------------------------------------
    def train(self, shared: Arrays, own: Arrays, state, server_round: int
              ) -> tuple[Arrays, dict[str, float]]:
        """The round's local update; returns the item rows' change and keeps (w, b, rows).

        `own` holds ITEM_IDS (sorted) and ITEM_TABLE (those rows of the global table);
        `state` is this client's private store."""
        local, labels, orders, w, b = self._round_inputs(own, state, server_round)
        table = torch.tensor(own[ITEM_TABLE])
        local_t, labels_t = torch.from_numpy(local), torch.from_numpy(labels)
        loss_sum = 0.0
        for order in orders:
            for start in range(0, len(order), self.batch_size):
                batch = torch.from_numpy(order[start:start + self.batch_size])
                rows, y = local_t[batch], labels_t[batch]
                w, b = self._score_step(table[rows], w, b, y)
                table, loss = self._item_step(table, rows, w, b, y)
                loss_sum += float(loss) * len(batch)
        return self._finish(own, state, w.numpy(), b.numpy(), table.numpy(), labels,
                            loss_sum / (len(labels) * len(orders)))

    def _round_inputs(self, own: Arrays, state, server_round: int) -> tuple:
        """(samples as rows of the received ITEM_IDS, labels, orders, w, b) of this round."""
        ids = own[ITEM_IDS]
        items, labels, orders = self.round_sample(server_round)
        local = np.searchsorted(ids, items)
        if not np.array_equal(ids[np.minimum(local, len(ids) - 1)], items):
            raise ValueError(f"partition {self.partition_id}: the item rows received do not "
                             "cover this round's sample")
        saved = state.load()
        _, w0, b0 = initial_model(self.data.num_items, self.dim, self.seed)
        w = torch.tensor(saved["weight"] if saved is not None else w0)
        b = torch.tensor(saved["bias"] if saved is not None else b0)
        return local, labels, orders, w, b

    @staticmethod
    def _finish(own: Arrays, state, w: np.ndarray, b: np.ndarray, rows: np.ndarray,
                labels: np.ndarray, loss: float) -> tuple[Arrays, dict[str, float]]:
        """Keep (w, b, the personal rows); the upload: the rows' change, and the metrics."""
        state.save({"weight": w, "bias": b, "item_ids": own[ITEM_IDS], "item_rows": rows})
        return ({ITEM_IDS: own[ITEM_IDS], ITEM_TABLE: rows - own[ITEM_TABLE]},
                {NUM_EXAMPLES: int(labels.sum()), TRAIN_LOSS: loss})

    def _score_step(self, rows: torch.Tensor, w: torch.Tensor, b: torch.Tensor,
                    labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Step 1: SGD on the score function at the batch's rows."""
        w, b = w.requires_grad_(), b.requires_grad_()
        grad_w, grad_b = torch.autograd.grad(bce(rows, w, b, labels), (w, b))
        return w.detach().add(grad_w, alpha=-self.lr), b.detach().add(grad_b, alpha=-self.lr)

    def _item_step(self, table: torch.Tensor, rows: torch.Tensor, w: torch.Tensor,
                   b: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Step 2: a fresh forward pass with the new score function, SGD on the item rows;
        returns the new table and the loss of this pass (the authors' logged loss). The lookup
        and the step are the authors' nn.Embedding and SGD ops: near saturation the large item
        step turns float rounding differences into visible ones."""
        table = table.requires_grad_()
        loss = bce(torch.nn.functional.embedding(rows, table), w, b, labels)
        (grad,) = torch.autograd.grad(loss, table)
        return table.detach().add(grad, alpha=-self.item_lr), loss.detach()

    def full_ranking_due(self, server_round: int) -> bool:
        return server_round % self.full_every == 0 or server_round == self.rounds

    def personal_table(self, shared: Arrays, state) -> tuple:
        """(base table, stored ids, stored rows, w, b) this user ranks with: its stored rows over
        the table `shared` holds (ITEM_TABLE, the global table the round's trainees started
        from), or the initial model if it never trained."""
        saved = state.load()
        if saved is None:
            table, w, b = initial_model(self.data.num_items, self.dim, self.seed)
            return table, np.empty(0, np.int64), table[:0], w, b
        return (shared[ITEM_TABLE], saved["item_ids"], saved["item_rows"], saved["weight"],
                saved["bias"])

    def evaluate(self, shared: Arrays, own: Arrays, state, server_round: int
                 ) -> tuple[Arrays, dict[str, float]]:
        """Ranking metric sums and counts of this user under its own score function and item
        table (:meth:`personal_table`)."""
        scorer = PersonalScorer(*zip(self.personal_table(shared, state)))
        sums = evaluate_users(scorer, self.data, self.users, self.head_fraction,
                              full=self.full_ranking_due(server_round))
        return {}, sums

    def batchable(self, shared: Arrays, training: bool) -> bool:
        """Cohort mode: :meth:`train_batch` and :meth:`evaluate_batch` (one product of the item
        table with all the clients' score functions for full ranking)."""
        return True

    @staticmethod
    def train_batch(clients: list[PFedRecClient], shared: Arrays, owns: list[Arrays],
                    stores: list, server_round: int) -> list[tuple[Arrays, dict[str, float]]]:
        """:meth:`train` of every client, in vectorised passes of clients of similar sample
        counts (:func:`clients.cohort.passes`): batch j of every client of a pass at once, a
        client without a batch j (fewer samples) left as it is by a zero mask."""
        inputs = [c._round_inputs(own, store, server_round)
                  for c, own, store in zip(clients, owns, stores)]
        replies: list = [None] * len(clients)
        for indices in cohort.passes([len(x[1]) for x in inputs]):
            computed = clients[0]._train_pass([inputs[i] for i in indices],
                                              [owns[i] for i in indices])
            for index, (w, b, rows, loss) in zip(indices, computed):
                replies[index] = clients[index]._finish(owns[index], stores[index], w, b, rows,
                                                        inputs[index][1], loss)
        return replies

    def _train_pass(self, inputs: list[tuple], owns: list[Arrays]) -> list[tuple]:
        """(w, b, personal rows, mean loss) of each client of one pass (this client's settings,
        which the spec gives every client of the message)."""
        size = self.batch_size
        samples = max(len(x[1]) for x in inputs)
        steps = -(-samples // size)
        tables = cohort.pad([own[ITEM_TABLE] for own in owns], max(len(own[ITEM_IDS])
                                                                    for own in owns))
        w = torch.stack([x[3] for x in inputs])
        b = torch.stack([x[4] for x in inputs])[:, 0]
        loss_sum = torch.zeros(len(inputs), dtype=torch.float64)
        for epoch in range(self.epochs):
            # [clients, steps x size]: each client's samples in its epoch order, zero-padded.
            rows = cohort.pad([x[0][x[2][epoch]] for x in inputs], steps * size).view(
                len(inputs), steps, size)
            labels = cohort.pad([x[1][x[2][epoch]] for x in inputs], steps * size).view(
                len(inputs), steps, size)
            mask = cohort.pad([np.ones(len(x[1]), np.float32) for x in inputs],
                              steps * size).view(len(inputs), steps, size)
            for j in range(steps):
                count = mask[:, j].sum(1)

                def losses(table, w, b):
                    """Each client's mean BCE over its batch j (0 without one)."""
                    index = rows[:, j, :, None].expand(-1, -1, table.shape[2])
                    found = torch.gather(table, 1, index)
                    logits = torch.einsum("cbd,cd->cb", found, w) + b[:, None]
                    bce_terms = torch.nn.functional.binary_cross_entropy(
                        torch.sigmoid(logits), labels[:, j], reduction="none")
                    return (bce_terms * mask[:, j]).sum(1) / count.clamp(min=1)

                w, b = w.requires_grad_(), b.requires_grad_()
                grad_w, grad_b = torch.autograd.grad(losses(tables, w, b).sum(), (w, b))
                w = w.detach().add(grad_w, alpha=-self.lr)
                b = b.detach().add(grad_b, alpha=-self.lr)
                tables = tables.requires_grad_()
                loss = losses(tables, w, b)
                (grad,) = torch.autograd.grad(loss.sum(), tables)
                tables = tables.detach().add(grad, alpha=-self.item_lr)
                loss_sum += loss.detach().double() * count
        return [(w[k].numpy(), b[k:k + 1].numpy(), tables[k, :len(own[ITEM_IDS])].numpy(),
                 float(loss_sum[k]) / (len(x[1]) * self.epochs))
                for k, (x, own) in enumerate(zip(inputs, owns))]

    @staticmethod
    def evaluate_batch(clients: list[PFedRecClient], shared: Arrays, stores: list,
                       server_round: int) -> list[tuple[Arrays, dict[str, float]]]:
        """:meth:`evaluate` of every client, scored together."""
        first = clients[0]
        scorer = PersonalScorer(*zip(*(c.personal_table(shared, store)
                                       for c, store in zip(clients, stores))))
        sums = evaluate_user_groups(scorer, first.data, np.concatenate([c.users for c in clients]),
                                    [1] * len(clients), first.head_fraction,
                                    full=first.full_ranking_due(server_round))
        return [({}, s) for s in sums]


class PersonalScorer:
    """Scores of users 0..n-1 (local rows), each with its own score function (w[k], b[k]) and
    item table: its stored rows (ids[k], sorted; rows[k]) over a base table (bases[k]). For
    :mod:`fedsim.metrics.leave_one_out`; ties in the float32 sigmoids are kept (the authors rank on
    them). The logits are computed in numpy: a base is a received, read-only table, which torch
    would have to copy whole."""

    def __init__(self, bases, ids, rows, w, b):
        self.bases, self.ids, self.rows = bases, ids, rows
        self.w = np.stack(w).astype(np.float32)
        self.b = np.concatenate(b).astype(np.float32)

    def _table_rows(self, user: int, items: np.ndarray) -> np.ndarray:
        """User `user`'s item table at `items`."""
        ids = self.ids[user]
        rows = self.bases[user][items]
        where = np.minimum(np.searchsorted(ids, items), max(len(ids) - 1, 0))
        stored = ids[where] == items if len(ids) else np.zeros(items.shape, bool)
        rows[stored] = self.rows[user][where[stored]]
        return rows

    def score_candidates(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        logits = np.stack([self._table_rows(k, row) @ self.w[k] + self.b[k]
                           for k, row in zip(users.tolist(), items.numpy())])
        return torch.sigmoid(torch.from_numpy(logits))

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        users = users.tolist()
        logits = np.empty((len(users), len(self.bases[users[0]])), np.float32)
        # One product per distinct base table (the one sent; the initial one) and its users.
        by_base: dict[int, list[int]] = {}
        for position, k in enumerate(users):
            by_base.setdefault(id(self.bases[k]), []).append(position)
        for positions in by_base.values():
            ks = [users[p] for p in positions]
            logits[positions] = (self.bases[ks[0]] @ self.w[ks].T).T + self.b[ks, None]
        for position, k in enumerate(users):
            logits[position, self.ids[k]] = self.rows[k] @ self.w[k] + self.b[k]
        return torch.sigmoid(torch.from_numpy(logits))
