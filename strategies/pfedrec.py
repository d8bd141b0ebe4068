"""PFedRec's server: the unweighted mean of the item tables its clients fine-tuned.

The authors' aggregate_clients_params (../shared/research/pfedrec.md) averages the
participants' whole item tables. A client's rows that no sample touched equal the global table
it received, so the mean is E + mean_u(Delta_u) with each Delta_u zero outside the rows the
client was sent: item-sparse messages both ways compute it exactly. Before training, each
sampled client is asked (``query.rows``) which rows it needs (those its round's samples touch
and its evaluation candidates', see clients/pfedrec.py), receives those rows of the global
table, and uploads their change. Full participation is the authors' default
(``fraction_train = 1``).

Evaluation sends the global table the last round's trainees started from (the round's E_{r-1},
the initial table at round 0): each client ranks with its own item rows where it has them and
this table elsewhere (clients/pfedrec.py says when that is exact).

Messages (layout of :mod:`fedsim.protocol`; per-client arrays by client and name)
---------------------------------------------------------------------------------
- ``query.rows``: no arrays; each client replies "item_ids" (int64 [n], sorted).
- train: per client "item_ids" and "item_table" [n, dim] (those rows of the global table); each
  client replies the same names with the rows' change, and metrics "num-examples" (positives)
  and "train-loss".
- evaluate: "arrays" = {"item_table": the table above}; each client replies metric sums and
  counts (:mod:`fedsim.metrics.leave_one_out`).

Nodes sum both the uploads (per row: the sum of the changes and the number of clients sent it)
and the evaluation replies (:mod:`fedsim.node_sums`; :meth:`PFedRec.sum_rule`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord
from flwr.serverapp import Grid

from fedsim.messages.common import NUM_EXAMPLES, TRAIN_LOSS
from fedsim.messages.pfedrec import ITEM_IDS, ITEM_TABLE, ROWS
from fedsim.metrics.pooling import pooled_means
from fedsim.models.pfedrec import initial_model
from fedsim.node_sums import Sum, SumRule
from fedsim.protocol import ClientReply
from strategies.base import PartitionedStrategy
from strategies.fedncf import item_ids_problem

UPLOAD = SumRule(rows=ITEM_IDS, row_arrays=(ITEM_TABLE,))


class PFedRec(PartitionedStrategy):
    """Item-sparse mean of the clients' item-table changes.

    Parameters
    ----------
    **kwargs
        Those of :class:`~strategies.base.PartitionedStrategy` (the authors: ``fraction_train``
        1.0).
    """

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.table: np.ndarray | None = None  # the global item table
        self.trained_from: np.ndarray | None = None  # the table the last round's trainees got
        self._sent: dict[int, np.ndarray] = {}  # partition -> item ids sent this round

    @staticmethod
    def initial_arrays(num_items: int, dim: int, seed: int) -> ArrayRecord:
        """The authors' initial item table (nn.Embedding, N(0, 1)) from `seed`."""
        return ArrayRecord({ITEM_TABLE: Array(np.array(initial_model(num_items, dim, seed)[0]))})

    def start(self, grid: Grid, initial_arrays: ArrayRecord, num_rounds: int = 3,
              *args: Any, **kwargs: Any):
        # The global table is all the server state: a resumed run gets it back as the
        # checkpoint's arrays (the table the next round's trainees start from).
        self.table = initial_arrays[ITEM_TABLE].numpy().copy()
        self.trained_from = self.table.copy()
        return super().start(grid, initial_arrays, num_rounds, *args, **kwargs)

    # --- training ------------------------------------------------------------------------------
    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        asks = self.instructions(ROWS, server_round, self.sample(server_round))
        self._sent = {c.partition: c.arrays[ITEM_IDS]
                      for c in self.collect(self.exchange(grid, asks))}
        self.trained_from = self.table.copy()
        per_client = {p: {ITEM_IDS: ids, ITEM_TABLE: self.table[ids]}
                      for p, ids in self._sent.items()}
        return self.instructions(MessageType.TRAIN, server_round, sorted(self._sent),
                                 per_client=per_client)

    def check_reply(self, reply: ClientReply) -> str | None:
        """Row requests: sorted unique int64 item ids of the catalogue. Uploads: exactly the
        rows sent, a float32 change of each."""
        if self.phase == MessageType.EVALUATE:
            return None
        ids = reply.arrays.get(ITEM_IDS)
        problem = item_ids_problem(ids, len(self.table))
        if problem is None and np.any(np.diff(ids) < 0):
            problem = "item ids not sorted"
        if problem is not None or self.phase == ROWS:
            return problem
        return UPLOAD.layout_problem(reply.arrays, {ITEM_TABLE: self.table},
                                     {ITEM_IDS: self._sent.get(reply.partition)})

    def sum_rule(self, message_type: str) -> SumRule | None:
        """Training: the uploads' row changes, unweighted; evaluation: the metric sums; the row
        request: per client."""
        if message_type == MessageType.TRAIN:
            return UPLOAD
        return SumRule() if message_type == MessageType.EVALUATE else None

    def sum_shapes(self, message_type: str) -> dict[str, tuple[int, ...]]:
        return {ITEM_TABLE: self.table.shape}

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        contributions = self.collect(replies)
        if not contributions:
            return None, None
        total = UPLOAD.total(contributions)
        apply_mean_change(self.table, total)
        metrics = {"train_loss": total.metrics[TRAIN_LOSS] / total.count,
                   "train_clients": total.count,
                   "train_positives": int(total.metrics[NUM_EXAMPLES])}
        self.record_train(metrics)
        return ArrayRecord({ITEM_TABLE: Array(self.table)}), MetricRecord(metrics)

    # --- evaluation ------------------------------------------------------------------------------
    def evaluate_shared(self, arrays: ArrayRecord) -> ArrayRecord:
        return ArrayRecord({ITEM_TABLE: Array(self.trained_from)})

    def evaluation_metrics(self, replies: list[ClientReply | Sum]) -> dict[str, float]:
        return pooled_means(SumRule().total(replies).metrics)


def apply_mean_change(table: np.ndarray, total: Sum) -> None:
    """table += the uploads' mean change, in place: each client's change summed over the rows it
    was sent (``total.ids``), divided by the number of uploads (a row a client was not sent
    counts as an unchanged row of its table, as in the authors' mean of whole tables)."""
    table[total.ids] += total.arrays[ITEM_TABLE] / np.float32(total.count)
