"""FedNCF client: one FedSGD step of NeuMF on the client's users (FedRecGEL authors' protocol).

Per round (../shared/research/fedrecgel.md §1.3-1.4, with rho = 0):
- samples: every training positive of the client's users, shuffled, each followed by
  ``train_negatives`` fresh negatives drawn uniformly without replacement from the items the
  user has not interacted with in training (so the held-out item can be drawn, as in the
  authors' code);
- loss: the sum over consecutive chunks of ``chunk_size`` samples of the chunk-mean BCE;
- private update: the user embeddings take a step of a persistent Adam (``client_lr``);
- upload: the gradient of the shared parameters (touched item rows + dense layers), not weights.

The client's round sample is a pure function of (seed, partition id, round), so the server can
first ask which item rows a client needs ("query.rows") and then send only those rows.
Private state (user embeddings and their Adam moments) lives in the node's Context state and
never enters a reply.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict

from clients.ranking_eval import evaluate_users
from fedsim.federation import load_federation
from fedsim.models import NeuMF
from fedsim.models.neumf import ITEM_TABLES, split_shared_private
from fedsim.optim import load_adam, save_adam

PRIVATE_KEY = "fedncf.private"


class FedNCFClient:
    """The users of one partition and the local FedNCF computations on them."""

    def __init__(self, spec: Mapping[str, Any], partition_id: int):
        federation = load_federation(spec)
        self.data = federation.dataset
        self.users = federation.train_parts[partition_id]
        self.partition_id = partition_id
        self.seed = spec["seed"]
        self.factor_dim = spec["neumf.factor_dim"]
        self.mlp_layers = spec["neumf.mlp_layers"]
        self.client_lr = spec["fedncf.client_lr"]
        self.negatives = spec["fedncf.train_negatives"]
        self.chunk_size = spec["fedncf.chunk_size"]
        self.head_fraction = spec["data.head_fraction"]

    # --- the round sample -----------------------------------------------------------------
    def round_sample(self, server_round: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(local user index, item id, label) of every training sample of this round, in order."""
        rng = np.random.default_rng([self.seed, self.partition_id, server_round])
        users, items, labels = [], [], []
        per_positive = 1 + self.negatives
        for local, user in enumerate(self.users):
            positives = rng.permutation(self.data.user_items(int(user)))
            pool = np.setdiff1d(np.arange(self.data.num_items), positives, assume_unique=True)
            # `negatives` distinct draws per positive: the smallest keys of a random matrix.
            keys = rng.random((len(positives), len(pool)))
            negatives = pool[np.argpartition(keys, self.negatives - 1, axis=1)[:, :self.negatives]]
            block = np.concatenate([positives[:, None], negatives], axis=1).reshape(-1)
            users.append(np.full(len(block), local))
            items.append(block)
            labels.append(np.tile([1.0] + [0.0] * self.negatives, len(positives)))
        return (np.concatenate(users), np.concatenate(items),
                np.concatenate(labels).astype(np.float32)) if users else (
                    np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))

    def needed_items(self, server_round: int) -> np.ndarray:
        return np.unique(self.round_sample(server_round)[1])

    # --- model assembly ---------------------------------------------------------------------
    def _model(self, shared: Mapping[str, np.ndarray], num_items: int,
               state: RecordDict) -> tuple[NeuMF, dict[str, np.ndarray]]:
        model = NeuMF(len(self.users), num_items, self.factor_dim, self.mlp_layers)
        private = self._private(state)
        tensors = {k: torch.from_numpy(np.array(v)) for k, v in shared.items() if k != "item_ids"}
        tensors.update({k: torch.from_numpy(private[k]) for k in ("user_gmf.weight",
                                                                    "user_mlp.weight")})
        model.load_state_dict(tensors)
        return model, private

    def _private(self, state: RecordDict) -> dict[str, np.ndarray]:
        if PRIVATE_KEY in state:
            return {k: v.numpy() for k, v in state.array_records[PRIVATE_KEY].items()}
        # First contact: N(0, 0.01²) user embeddings, seeded by (seed, partition) like every draw.
        rng = np.random.default_rng([self.seed, self.partition_id, 0xE4B])
        mlp_dim = self.factor_dim * 2 ** (self.mlp_layers - 1)
        return {
            "user_gmf.weight": rng.normal(0, 0.01, (len(self.users), self.factor_dim)).astype(np.float32),
            "user_mlp.weight": rng.normal(0, 0.01, (len(self.users), mlp_dim)).astype(np.float32),
        }

    # --- message handlers ---------------------------------------------------------------------
    def train(self, content: RecordDict, state: RecordDict, server_round: int) -> RecordDict:
        received = {k: v.numpy() for k, v in content.array_records["arrays"].items()}
        item_ids = received["item_ids"]
        model, private = self._model(received, len(item_ids), state)
        users, items, labels = self.round_sample(server_round)
        if not np.array_equal(np.unique(items), item_ids):
            raise ValueError(f"partition {self.partition_id}: the server sent item rows "
                             f"{len(item_ids)} that do not match this round's sample")
        local_items = torch.from_numpy(np.searchsorted(item_ids, items))
        logits = model(torch.from_numpy(users), local_items)
        loss = chunked_bce(logits, torch.from_numpy(labels), self.chunk_size)
        loss.backward()

        user_params = [model.user_gmf.weight, model.user_mlp.weight]
        optimizer = torch.optim.Adam(user_params, lr=self.client_lr)
        load_adam(optimizer, {k[5:]: v for k, v in private.items() if k.startswith("adam.")})
        optimizer.step()
        new_private = {"user_gmf.weight": model.user_gmf.weight.detach().numpy(),
                       "user_mlp.weight": model.user_mlp.weight.detach().numpy()}
        new_private.update({f"adam.{k}": v for k, v in save_adam(optimizer).items()})
        state[PRIVATE_KEY] = ArrayRecord({k: Array(np.ascontiguousarray(v))
                                          for k, v in new_private.items()})

        grads, _ = split_shared_private({name: p.grad for name, p in model.named_parameters()})
        upload = {"item_ids": Array(item_ids)}
        upload.update({name: Array(g.numpy()) for name, g in grads.items()})
        return RecordDict({
            "arrays": ArrayRecord(upload),
            "metrics": MetricRecord({"num-examples": int(labels.sum()),
                                     "train-loss": float(loss.detach())}),
        })

    def evaluate(self, content: RecordDict, state: RecordDict) -> RecordDict:
        shared = {k: v.numpy() for k, v in content.array_records["arrays"].items()}
        model, _ = self._model(shared, shared[ITEM_TABLES[0]].shape[0], state)
        with torch.no_grad():
            sums = evaluate_users(model, self.data, self.users, self.head_fraction)
        return RecordDict({"metrics": MetricRecord(sums)})


def chunked_bce(logits: torch.Tensor, labels: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """Sum over consecutive chunks of the chunk-mean BCE-with-logits (authors' loss scale)."""
    total = logits.new_zeros(())
    for start in range(0, len(logits), chunk_size):
        total = total + torch.nn.functional.binary_cross_entropy_with_logits(
            logits[start:start + chunk_size], labels[start:start + chunk_size])
    return total
