"""Cohort execution of FedNCF / FedMF / FedRecGEL: a node's clients of one message in one pass.

Cross-device recommendation has thousands of clients a round, each with microseconds of
compute; run one by one, a client pays for building a model, an optimizer and a few small
kernels. Here the clients of a message are stacked along a leading client axis and their
rounds run as one vectorised computation (``torch.func.vmap``), while the math stays per
client: each client has its own user rows, its own item rows, its own sample and negatives, its
own SAM perturbations (norms taken per client), its own Adam state and its own upload. Only the
floating-point summation order differs from :meth:`clients.fedncf.FedNCFClient.train`, so the
results agree to float tolerance (tests/test_cohort.py); aggregation is unchanged.

Clients are padded to a common size within buckets of similar sample counts (powers of two),
so a client with 5 samples is not padded to the 1,000 of the largest one; padded samples carry
zero loss weight and padded rows get zero gradients.

Evaluation stacks the user rows of all the message's clients under one model and ranks them in
one pass, with per-client sums (:func:`clients.ranking_eval.evaluate_user_groups`).
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import torch
from torch.func import functional_call, grad, vmap

from clients.fedncf import FedNCFClient, save_private
from clients.ranking_eval import evaluate_user_groups
from fedsim.optim import perturbation

Arrays = dict[str, np.ndarray]
BETAS, ADAM_EPS = (0.9, 0.999), 1e-8  # torch.optim.Adam's defaults, which the clients use
# Clients per vectorised pass, at most. Each client holds its own gradient of the dense layers
# (NeuMF: 43k floats) in each SAM pass, so a message of thousands of clients in one pass would
# allocate gigabytes; 128 bounds that to about 70 MB and ran no slower per client than one pass
# over 600 clients (synthetic data) or 400 (Amazon-Video) in our measurements.
MAX_BATCH = 128


def supports(clients: list, shared: Arrays, training: bool) -> bool:
    """Cohort mode covers the FedNCF-family clients whose round it computes
    (:meth:`FedNCFClient.batchable`). Training needs item-sparse messages (in DP's dense-rows
    mode every client holds the whole item table, which stacking would copy per client);
    evaluation always receives the whole item table in ``shared`` and scores every client's
    users against that one copy."""
    return (all(isinstance(c, FedNCFClient) and c.batchable() for c in clients)
            and not (training and any(k in shared for k in clients[0].backbone.ITEM_TABLES)))


def train_cohort(clients: list[FedNCFClient], shared: Arrays, owns: list[Arrays], stores: list,
                 server_round: int) -> list[tuple[Arrays, dict[str, float]]]:
    """:meth:`FedNCFClient.train` of every client, batched; replies in the order of ``clients``."""
    inputs = [_client_inputs(c, own, store, server_round)
              for c, own, store in zip(clients, owns, stores)]
    buckets = defaultdict(list)
    for index, item in enumerate(inputs):
        buckets[1 << math.ceil(math.log2(max(len(item["labels"]), 1)))].append(index)
    chunks = [indices[start:start + MAX_BATCH] for indices in buckets.values()
              for start in range(0, len(indices), MAX_BATCH)]
    replies: list = [None] * len(clients)
    for indices in chunks:
        for index, reply in zip(indices, _train_bucket(clients[0], shared, [inputs[i] for i in indices],
                                                       [stores[i] for i in indices])):
            replies[index] = reply
    return replies


def evaluate_cohort(clients: list[FedNCFClient], shared: Arrays, stores: list,
                    server_round: int) -> list[tuple[Arrays, dict[str, float]]]:
    """:meth:`FedNCFClient.evaluate` of every client: one model holding all their user rows."""
    first = clients[0]
    privates = [c.private_state(store) for c, store in zip(clients, stores)]
    users = {k: np.concatenate([p[k] for p in privates]) for k in first.backbone.USER_TABLES}
    model = first.backbone.from_arrays({**shared, **users})
    with torch.no_grad():
        sums = evaluate_user_groups(model, first.data, np.concatenate([c.users for c in clients]),
                                    [len(c.users) for c in clients], first.head_fraction,
                                    full=first.full_ranking_due(server_round))
    return [({}, s) for s in sums]


def _client_inputs(client: FedNCFClient, own: Arrays, store, server_round: int) -> dict:
    users, items, labels = client.local_sample(own["item_ids"], server_round)
    return {"private": client.private_state(store), "own": own, "users": users, "items": items,
            "labels": labels, "weights": _chunk_weights(len(labels), client.chunk_size)}


def _chunk_weights(n: int, chunk: int) -> np.ndarray:
    """Per-sample weights that turn a weighted BCE sum into the clients' loss: the sum over
    consecutive chunks of the chunk mean (:func:`clients.fedncf.chunked_bce`)."""
    sizes = np.minimum(chunk, n - np.arange(0, n, chunk))
    return np.repeat(1.0 / sizes, sizes).astype(np.float32)


def _pad(arrays: list[np.ndarray], length: int) -> torch.Tensor:
    """Stack along a new client axis, zero-padding axis 0 of each to ``length``."""
    out = np.zeros((len(arrays), length, *arrays[0].shape[1:]), dtype=arrays[0].dtype)
    for k, a in enumerate(arrays):
        out[k, :len(a)] = a
    return torch.from_numpy(out)


def _train_bucket(client: FedNCFClient, shared: Arrays, inputs: list[dict], stores: list
                  ) -> list[tuple[Arrays, dict[str, float]]]:
    backbone = client.backbone
    user_tables, item_tables = backbone.USER_TABLES, backbone.ITEM_TABLES
    samples = max(len(x["labels"]) for x in inputs)
    rows = max(len(x["own"]["item_ids"]) for x in inputs)
    user_rows = max(len(next(iter(x["private"].values()))) for x in inputs)
    per_client = {**{k: _pad([x["private"][k] for x in inputs], user_rows) for k in user_tables},
                  **{k: _pad([x["own"][k] for x in inputs], rows) for k in item_tables}}
    dense = {k: torch.from_numpy(np.asarray(v)) for k, v in shared.items()}
    batch = [_pad([x[key] for x in inputs], samples)
             for key in ("users", "items", "labels", "weights")]

    model = backbone(0, 0, **backbone.sizes_of({**shared, **inputs[0]["private"]}))
    rho_sh, rho_ns, rowwise_items = client.sam_radii()

    def loss(params, users, items, labels, weights):
        logits = functional_call(model, params, (users, items))
        return (torch.nn.functional.binary_cross_entropy_with_logits(
            logits, labels, reduction="none") * weights).sum()

    def group_loss(group, rest, users, items, labels, weights):
        """The loss as a function of one parameter group: its SAM pass differentiates only
        that group (the user-row pass then skips the per-client gradients of the MLP)."""
        return loss({**rest, **group}, users, items, labels, weights)

    def round_gradients(own_params, dense_params, users, items, labels, weights):
        """One client's FedRecGEL gradients (FedNCF's when both radii are 0): base gradient,
        then a SAM pass per group from it, as FedRecGELClient.gradients."""
        params = {**own_params, **dense_params}
        base, value = torch.func.grad_and_value(loss)(params, users, items, labels, weights)
        grads = dict(base)
        groups = ((rho_sh, [n for n in params if n.startswith(backbone.SHARED_PREFIXES)]),
                  (rho_ns, list(user_tables)))
        for rho, names in groups:
            if rho == 0:
                continue
            flags = [rowwise_items and n in item_tables for n in names]
            eps = perturbation([base[n] for n in names], rho, flags)
            moved = {n: params[n] + e for n, e in zip(names, eps)}
            rest = {n: v for n, v in params.items() if n not in moved}
            grads.update(grad(group_loss)(moved, rest, users, items, labels, weights))
        return value, grads

    values, grads = vmap(round_gradients, in_dims=(0, None, 0, 0, 0, 0))(
        per_client, dense, *batch)
    new_tables, adam = _adam_step({k: per_client[k] for k in user_tables},
                                  {k: grads[k] for k in user_tables}, inputs, client.client_lr)

    replies = []
    for k, (x, store) in enumerate(zip(inputs, stores)):
        n_users, n_rows = len(next(iter(x["private"].values()))), len(x["own"]["item_ids"])
        save_private(store, {t: new_tables[t][k, :n_users].numpy() for t in user_tables},
                     {name: (a[k] if name.endswith(".step") else a[k, :n_users]).numpy()
                      for name, a in adam.items()})
        upload = {"item_ids": x["own"]["item_ids"]}
        for name, g in grads.items():
            if name.startswith(backbone.SHARED_PREFIXES):
                upload[name] = (g[k, :n_rows] if name in item_tables else g[k]).numpy()
        replies.append((upload, {"num-examples": int(x["labels"].sum()),
                                 "train-loss": float(values[k])}))
    return replies


def _adam_step(tables: dict[str, torch.Tensor], grads: dict[str, torch.Tensor], inputs: list[dict],
               lr: float) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """One step of every client's own Adam on its user tables, batched: torch.optim.Adam's
    update (defaults, as the clients' optimizer), with each client's step count and moments
    read from its private state (fresh when it has none) in the layout of
    :func:`fedsim.optim.save_adam` (parameter i = the i-th user table)."""
    beta1, beta2 = BETAS
    new_tables, state = {}, {}
    for i, name in enumerate(tables):
        shape = tables[name].shape[1:]
        steps = torch.tensor([float(x["private"].get(f"adam.{i}.step", [0.0])[0]) for x in inputs],
                             dtype=torch.float64)  # torch's Adam: corrections in double
        moments = [_pad([x["private"].get(f"adam.{i}.{m}", np.zeros((len(x["private"][name]),
                                                                       *shape[1:]), np.float32))
                         for x in inputs], shape[0]) for m in ("exp_avg", "exp_avg_sq")]
        exp_avg, exp_avg_sq = moments
        g = grads[name]
        steps = steps + 1
        exp_avg = exp_avg.lerp(g, 1 - beta1)
        exp_avg_sq = exp_avg_sq * beta2 + (1 - beta2) * g * g
        view = (-1,) + (1,) * len(shape)
        step_size = (lr / (1 - beta1 ** steps)).float().view(view)
        denom = exp_avg_sq.sqrt() / (1 - beta2 ** steps).sqrt().float().view(view) + ADAM_EPS
        new_tables[name] = tables[name] - step_size * exp_avg / denom
        state.update({f"{i}.exp_avg": exp_avg, f"{i}.exp_avg_sq": exp_avg_sq,
                      f"{i}.step": steps[:, None]})  # float64 [1] per client, as save_adam
    return new_tables, state
