"""FedNCF/FedMF client: one FedSGD step on the client's users (FedRecGEL authors' protocol).

Per round (../shared/research/fedrecgel.md §1.3-1.4, with rho = 0):
- samples: every training positive of the client's users, shuffled, each followed by
  ``train_negatives`` fresh negatives drawn uniformly without replacement from the items the
  user has not interacted with in training (so the held-out item can be drawn, as in the
  authors' code);
- loss: the sum over consecutive chunks of ``chunk_size`` samples of the chunk-mean BCE;
- private update: the user embeddings take a step of a persistent Adam (``client_lr``);
- upload: the gradient of the shared parameters (touched item rows + dense layers), not weights.

The backbone is the spec's ``model`` (NeuMF for FedNCF, MF for FedMF); the class only relies on
its table ownership (:class:`fedsim.models.recommender.Recommender`). Subclasses change how the
gradients of one round are taken (:meth:`FedNCFClient.gradients`; FedRecGEL adds SAM passes).

Cohort mode (:mod:`clients.cohort`): :meth:`FedNCFClient.train_batch` computes the rounds of a
message's clients in one vectorised pass (``torch.func.vmap`` over a client axis), each client
with its own user rows, item rows, sample and negatives, gradients (:meth:`batched_gradients`,
the twin of :meth:`gradients`), Adam state and upload; clients are padded to a common size
within a pass, padded samples carrying zero loss weight and padded rows zero gradients.
:meth:`FedNCFClient.evaluate_batch` ranks all their users under one model. Both agree with the
clients run one by one to float tolerance (tests/test_cohort.py).

The client's round sample is a pure function of (seed, partition id, round), so the server can
first ask which item rows a client needs ("query.rows") and then send only those rows.
Private state (user embeddings and their Adam moments) lives in the node's Context state and
never enters a reply.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Mapping

import numpy as np
import torch
from torch.func import functional_call, grad_and_value, vmap

from clients import cohort
from fedsim.metrics.leave_one_out import evaluate_user_groups, evaluate_users
from fedsim.federation import load_federation
from fedsim.messages.common import NUM_EXAMPLES, TRAIN_LOSS
from fedsim.messages.fedncf import ITEM_IDS
from fedsim.models import Recommender, backbone
from fedsim.optim import load_adam, save_adam

Arrays = dict[str, np.ndarray]
Reply = tuple[Arrays, dict[str, float]]


class FedNCFClient:
    """The users of one partition and the local FedNCF computations on them."""

    def __init__(self, spec: Mapping[str, Any], partition_id: int):
        federation = load_federation(spec)
        self.data = federation.dataset
        self.users = federation.train_parts[partition_id]
        self.partition_id = partition_id
        self.seed = spec["seed"]
        self.backbone, sizes = backbone(spec)
        self.user_widths = user_widths(self.backbone, tuple(sorted(sizes.items())))
        self.client_lr = spec["fedncf.client_lr"]
        self.negatives = spec["fedncf.train_negatives"]
        self.chunk_size = spec["fedncf.chunk_size"]
        self.head_fraction = spec["data.head_fraction"]
        self.full_every, self.rounds = spec["eval_full_every"], spec["rounds"]
        self._last_sample: tuple[int, tuple] = (-1, ())
        self._initial: Arrays | None = None  # first-contact private state, once drawn

    # --- the round sample -----------------------------------------------------------------
    def round_sample(self, server_round: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(local user index, item id, label) of every training sample of this round, in order.

        The row request and the training of a round both need it; the last round's sample is
        kept (client objects are cached per process), so an actor serving both draws it once.
        """
        if self._last_sample[0] != server_round:
            self._last_sample = (server_round, self._draw_sample(server_round))
        return self._last_sample[1]

    def _draw_sample(self, server_round: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, self.partition_id, server_round])
        users, items, labels = [], [], []
        for local, user in enumerate(self.users):
            positives = rng.permutation(self.data.user_items(int(user)))
            negatives = distinct_negatives(rng, positives, self.data.num_items, len(positives),
                                           self.negatives)
            block = np.concatenate([positives[:, None], negatives], axis=1).reshape(-1)
            users.append(np.full(len(block), local))
            items.append(block)
            labels.append(np.tile([1.0] + [0.0] * self.negatives, len(positives)))
        return (np.concatenate(users), np.concatenate(items),
                np.concatenate(labels).astype(np.float32))

    def local_sample(self, item_ids: np.ndarray, server_round: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The round sample with items as rows of the received ``item_ids`` (which must cover it)."""
        users, items, labels = self.round_sample(server_round)
        local_items = np.searchsorted(item_ids, items)
        if not np.array_equal(item_ids[np.minimum(local_items, len(item_ids) - 1)], items):
            raise ValueError(f"partition {self.partition_id}: the item rows received do not "
                             "cover this round's sample")
        return users, local_items, labels

    def needed_items(self, server_round: int) -> np.ndarray:
        """Item rows this round's sample touches (asked for before training)."""
        return np.unique(self.round_sample(server_round)[1])

    def query_rows(self, shared: Arrays, own: Arrays, state, server_round: int
                   ) -> tuple[Arrays, dict[str, float]]:
        """The reply to the server's ``query.rows`` before training: :meth:`needed_items`."""
        return {ITEM_IDS: self.needed_items(server_round)}, {}

    # --- private state --------------------------------------------------------------------------
    def private_state(self, state) -> Arrays:
        saved = state.load()
        if saved is not None:
            return saved
        # First contact: N(0, 0.01²) user embeddings, seeded by (seed, partition) like every draw;
        # drawn once per process (client objects are cached): every evaluation round asks for
        # the users not trained yet, and a generator costs more than a copy.
        if self._initial is None:
            rng = np.random.default_rng([self.seed, self.partition_id, 0xE4B])
            self._initial = {name: rng.normal(0, 0.01, (len(self.users), self.user_widths[name]))
                             .astype(np.float32) for name in self.backbone.USER_TABLES}
        return {name: table.copy() for name, table in self._initial.items()}

    # --- message handlers ---------------------------------------------------------------------
    def train(self, shared: Arrays, own: Arrays, state, server_round: int
              ) -> tuple[Arrays, dict[str, float]]:
        """One FedSGD step: returns the shared-parameter gradient and updates the private state.

        `shared` holds the dense layers, `own` the item rows this client asked for ("item_ids"
        and the backbone's item tables); `state` is this client's private store.
        """
        item_ids = own[ITEM_IDS]
        private = self.private_state(state)
        user_tables = self.backbone.USER_TABLES
        model = self.backbone.from_arrays({**shared, **_without(own, ITEM_IDS),
                                           **{k: private[k] for k in user_tables}})
        users, local_items, labels = self.local_sample(item_ids, server_round)
        users_t, items_t, labels_t = (torch.from_numpy(a) for a in (users, local_items, labels))
        loss, grads = self.gradients(
            model, lambda weights=None: chunked_bce(model(users_t, items_t), labels_t,
                                                    self.chunk_size, weights))

        user_params = [model.get_parameter(k) for k in user_tables]
        for name, param in zip(user_tables, user_params):
            param.grad = grads[name]
        optimizer = torch.optim.Adam(user_params, lr=self.client_lr)
        load_adam(optimizer, {k[5:]: v for k, v in private.items() if k.startswith("adam.")})
        optimizer.step()
        save_private(state, {k: p.detach().numpy() for k, p in zip(user_tables, user_params)},
                     save_adam(optimizer))

        upload, _ = self.backbone.split(grads)
        upload = {ITEM_IDS: item_ids, **{n: g.numpy() for n, g in upload.items()}}
        return upload, {NUM_EXAMPLES: int(labels.sum()), TRAIN_LOSS: float(loss.detach())}

    def gradients(self, model: Recommender, loss_fn: Callable[[], torch.Tensor]
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(loss, gradient of every parameter by name) of this round's sample: one plain pass.

        `loss_fn(weights=None)` recomputes the round's loss on the same sample (with per-sample
        weights if given, see :func:`chunked_bce`), for methods that need the gradient at more
        than one point.
        """
        names, params = zip(*model.named_parameters())
        loss = loss_fn()
        return loss, dict(zip(names, torch.autograd.grad(loss, params)))

    def full_ranking_due(self, server_round: int) -> bool:
        return server_round % self.full_every == 0 or server_round == self.rounds

    def evaluate(self, shared: Arrays, own: Arrays, state, server_round: int
                 ) -> tuple[Arrays, dict[str, float]]:
        """Ranking metric sums and counts of this client's users under the shared model."""
        private = self.private_state(state)
        model = _evaluation_model(self.backbone, shared, private)
        with torch.no_grad():
            sums = evaluate_users(model, self.data, self.users, self.head_fraction,
                                  full=self.full_ranking_due(server_round))
        return {}, sums

    # --- cohort mode: the same rounds, a message's clients at once (clients.cohort) -----------
    def batchable(self, shared: Arrays, training: bool) -> bool:
        """This class's rounds are :meth:`train_batch`'s and :meth:`evaluate_batch`'s. Training
        needs item-sparse messages: in DP's dense-rows mode every client holds the whole item
        table, which stacking would copy per client; evaluation always receives the whole item
        table in ``shared`` and scores every client's users against that one copy."""
        return not (training and any(k in shared for k in self.backbone.ITEM_TABLES))

    @staticmethod
    def train_batch(clients: list[FedNCFClient], shared: Arrays, owns: list[Arrays],
                    stores: list, server_round: int) -> list[Reply]:
        """:meth:`train` of every client (all of one class), in vectorised passes of clients of
        similar sample counts (:func:`clients.cohort.passes`); replies in the order of
        ``clients``."""
        inputs = [client._batch_inputs(own, store, server_round)
                  for client, own, store in zip(clients, owns, stores)]
        replies: list = [None] * len(clients)
        for indices in cohort.passes([len(x["labels"]) for x in inputs]):
            computed = clients[0]._train_pass(shared, [inputs[i] for i in indices],
                                              [stores[i] for i in indices])
            for index, reply in zip(indices, computed):
                replies[index] = reply
        return replies

    def _batch_inputs(self, own: Arrays, store, server_round: int) -> dict:
        users, items, labels = self.local_sample(own[ITEM_IDS], server_round)
        return {"private": self.private_state(store), "own": own, "users": users, "items": items,
                "labels": labels, "weights": chunk_weights(len(labels), self.chunk_size)}

    def _train_pass(self, shared: Arrays, inputs: list[dict], stores: list) -> list[Reply]:
        """One vectorised pass of :meth:`train` over the clients of `inputs` (this client's
        settings, which the spec gives every client of the message)."""
        user_tables, item_tables = self.backbone.USER_TABLES, self.backbone.ITEM_TABLES
        samples = max(len(x["labels"]) for x in inputs)
        rows = max(len(x["own"][ITEM_IDS]) for x in inputs)
        user_rows = max(len(x["private"][user_tables[0]]) for x in inputs)
        per_client = {
            **{k: cohort.pad([x["private"][k] for x in inputs], user_rows) for k in user_tables},
            **{k: cohort.pad([x["own"][k] for x in inputs], rows) for k in item_tables}}
        dense = {k: torch.from_numpy(np.asarray(v)) for k, v in shared.items()}
        batch = [cohort.pad([x[key] for x in inputs], samples)
                 for key in ("users", "items", "labels", "weights")]
        # Only the module structure matters (functional_call supplies every parameter): one
        # empty model per sizes and process, not a freshly initialised one per pass.
        sizes = self.backbone.sizes_of({**shared, **inputs[0]["private"]})
        model = empty_model(self.backbone, tuple(sorted(sizes.items())))

        def round_gradients(own_params, dense_params, users, items, labels, weights):
            """One client's (loss, gradients): the weighted BCE sum is :func:`chunked_bce`."""
            def loss(params):
                logits = functional_call(model, params, (users, items))
                return (torch.nn.functional.binary_cross_entropy_with_logits(
                    logits, labels, reduction="none") * weights).sum()
            return self.batched_gradients(loss, {**own_params, **dense_params})

        values, grads = vmap(round_gradients, in_dims=(0, None, 0, 0, 0, 0))(
            per_client, dense, *batch)
        new_tables, adam = cohort.adam_step({k: per_client[k] for k in user_tables},
                                            {k: grads[k] for k in user_tables},
                                            [x["private"] for x in inputs], self.client_lr)
        # Each client's arrays are views of the batched ones, sliced in numpy: a tensor's
        # select/slice/.numpy() per array and client cost more than the rest of this loop.
        new_tables = {t: new_tables[t].numpy() for t in user_tables}
        adam = {name: a.numpy() for name, a in adam.items()}
        uploads = {name: g.numpy() for name, g in grads.items()
                   if name.startswith(self.backbone.SHARED_PREFIXES)}
        replies = []
        for k, (x, store) in enumerate(zip(inputs, stores)):
            n_users, n_rows = len(x["private"][user_tables[0]]), len(x["own"][ITEM_IDS])
            save_private(store, {t: new_tables[t][k, :n_users] for t in user_tables},
                         {name: a[k] if name.endswith(".step") else a[k, :n_users]
                          for name, a in adam.items()})
            upload = {ITEM_IDS: x["own"][ITEM_IDS]}
            for name, g in uploads.items():
                upload[name] = g[k, :n_rows] if name in item_tables else g[k]
            replies.append((upload, {NUM_EXAMPLES: int(x["labels"].sum()),
                                     TRAIN_LOSS: float(values[k])}))
        return replies

    def batched_gradients(self, loss: Callable[[dict[str, torch.Tensor]], torch.Tensor],
                          params: dict[str, torch.Tensor]
                          ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """:meth:`gradients` as a pure function of one client's parameters, for ``vmap``:
        (loss, gradient of every parameter by name), one plain pass."""
        grads, value = grad_and_value(loss)(params)
        return value, grads

    @staticmethod
    def evaluate_batch(clients: list[FedNCFClient], shared: Arrays, stores: list,
                       server_round: int) -> list[Reply]:
        """:meth:`evaluate` of every client: one model holding all their user rows."""
        first = clients[0]
        privates = [c.private_state(store) for c, store in zip(clients, stores)]
        users = {k: np.concatenate([p[k] for p in privates]) for k in first.backbone.USER_TABLES}
        model = first.backbone.from_arrays({**shared, **users})
        with torch.no_grad():
            sums = evaluate_user_groups(model, first.data,
                                        np.concatenate([c.users for c in clients]),
                                        [len(c.users) for c in clients], first.head_fraction,
                                        full=first.full_ranking_due(server_round))
        return [({}, s) for s in sums]


# The model of the evaluation message being served: (its shared arrays, the model). A node
# evaluates all its clients with the same shared arrays, so the model (and NeuMF's item-side
# precomputation) is built once per message, and only the user tables change between clients.
# The strong reference to `shared` keeps the identity check sound.
_EVALUATION: list = [None, None]


def _evaluation_model(backbone: type[Recommender], shared: Arrays, private: Arrays) -> Recommender:
    users = {k: private[k] for k in backbone.USER_TABLES}
    if _EVALUATION[0] is not shared or type(_EVALUATION[1]) is not backbone:
        _EVALUATION[:] = [shared, backbone.from_arrays({**shared, **users})]
        return _EVALUATION[1]
    model = _EVALUATION[1]
    for name, table in users.items():
        setattr(model, name.removesuffix(".weight"),
                torch.nn.Embedding.from_pretrained(torch.tensor(table), freeze=False))
    return model


@functools.lru_cache(maxsize=64)
def empty_model(model: type[Recommender], sizes: tuple[tuple[str, Any], ...]) -> Recommender:
    """A model of these constructor sizes with no user or item rows, built once per process:
    building (and initialising) a NeuMF costs about 1.5 ms, and a round has thousands of new
    clients and a cohort pass per bucket. Read-only: its users read its shapes or swap in
    parameters of their own (``functional_call``)."""
    return model(0, 0, **dict(sizes))


@functools.lru_cache(maxsize=64)
def user_widths(model: type[Recommender], sizes: tuple[tuple[str, Any], ...]) -> dict[str, int]:
    """Widths of the private tables, read off the empty model of these sizes."""
    return {k: v.shape[1] for k, v in empty_model(model, sizes).state_dict().items()
            if k in model.USER_TABLES}


def distinct_negatives(rng: np.random.Generator, positives: np.ndarray, num_items: int,
                       rows: int, k: int) -> np.ndarray:
    """[rows, k] items, each row k distinct items drawn uniformly from those not in ``positives``.

    Rejection sampling: each row draws uniform item ids and keeps its first k that are new and
    not positive, which is a uniform k-subset of the allowed items (sampling without
    replacement = sequential draws that reject repeats). It costs O(k) per row where scoring
    every allowed item costs O(num_items); rows short of k valid draws draw again.
    """
    allowed = num_items - len(positives)
    if allowed < k:
        raise ValueError(f"{k} distinct negatives asked from {allowed} non-positive items")
    width = min(4 * k * num_items // allowed + 4, 64 * k)  # ~4x the expected draws per row
    earlier = np.tril(np.ones((width, width), bool), -1)  # [j, i]: position i comes before j
    out = np.empty((rows, k), np.int64)
    todo = np.arange(rows)
    while len(todo):
        draws = rng.integers(0, num_items, (len(todo), width))
        repeat = ((draws[:, :, None] == draws[:, None, :]) & earlier).any(2)
        keep = ~repeat & ~np.isin(draws, positives)
        done = keep.sum(1) >= k
        first = np.argsort(~keep[done], axis=1, kind="stable")[:, :k]
        out[todo[done]] = np.take_along_axis(draws[done], first, axis=1)
        todo = todo[~done]
    return out


def save_private(state, user_tables: Arrays, adam: Arrays) -> None:
    """A client's private state: its user tables and their Adam state (keys "adam.<i>.*")."""
    state.save({**user_tables, **{f"adam.{k}": v for k, v in adam.items()}})


def _without(arrays: Arrays, key: str) -> Arrays:
    return {k: v for k, v in arrays.items() if k != key}


def chunk_weights(n: int, chunk: int) -> np.ndarray:
    """Per-sample weights that turn a weighted BCE sum over `n` samples into
    :func:`chunked_bce`: the sum over consecutive chunks of the chunk mean."""
    sizes = np.minimum(chunk, n - np.arange(0, n, chunk))
    return np.repeat(1.0 / sizes, sizes).astype(np.float32)


def chunked_bce(logits: torch.Tensor, labels: torch.Tensor, chunk_size: int,
                weights: torch.Tensor | None = None) -> torch.Tensor:
    """Sum over consecutive chunks of the chunk-mean BCE-with-logits (authors' loss scale);
    with `weights`, each sample's term is scaled by its weight inside the chunk mean."""
    total = logits.new_zeros(())
    for start in range(0, len(logits), chunk_size):
        chunk = slice(start, start + chunk_size)
        total = total + torch.nn.functional.binary_cross_entropy_with_logits(
            logits[chunk], labels[chunk], None if weights is None else weights[chunk])
    return total
