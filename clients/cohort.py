"""Cohort mode's generic driver: which clients a node may batch, and the tools of a batched pass.

Cross-device recommendation has thousands of clients a round, each with microseconds of
compute; run one by one, a client pays for building a model, an optimizer and a few small
kernels. In cohort mode (spec ``cohort``) a node computes the clients of one message in one
vectorised pass instead, while the math stays per client. The batched computation of a round is
the client class's own, next to the per-client math it mirrors (FedNCF/FedMF:
:meth:`clients.fedncf.FedNCFClient.train_batch`, :meth:`~clients.fedncf.FedNCFClient.evaluate_batch`;
FedRecGEL's SAM passes: :meth:`clients.fedrecgel.FedRecGELClient.batched_gradients`), and
tests/test_cohort.py checks each batching class against its clients run one by one (float
tolerance: only the summation order differs).

Batching is opt-in per class: a class batches only if its own body declares
``batchable(self, shared, training)`` (:func:`supports`). The declaration is not inherited, so a
subclass that changes the round (its training, its gradients, its evaluation) runs one client
at a time, with its own math, until it declares that its batched twin is right for it too.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import torch

Arrays = dict[str, np.ndarray]
BETAS, ADAM_EPS = (0.9, 0.999), 1e-8  # torch.optim.Adam's defaults, which the clients use
# Clients per vectorised pass, at most. Each client holds its own gradient of the dense layers
# (NeuMF: 43k floats) in each SAM pass, so a message of thousands of clients in one pass would
# allocate gigabytes; 128 bounds that to about 70 MB and ran no slower per client than one pass
# over 600 clients (synthetic data) or 400 (Amazon-Video) in our measurements.
MAX_BATCH = 128


def supports(clients: list, shared: Arrays, training: bool) -> bool:
    """Whether a node may compute `clients` (one message's) in one batched pass: all of one
    class whose own body declares ``batchable`` (not inherited: see the module docstring),
    and every client's ``batchable(shared, training)`` agrees."""
    cls = type(clients[0])
    return ("batchable" in vars(cls) and all(type(c) is cls for c in clients)
            and all(c.batchable(shared, training) for c in clients))


def passes(sizes: list[int]) -> list[list[int]]:
    """Indices of the clients of each vectorised pass: clients of similar size (sample counts
    in the same power of two) together, so that a client with 5 samples is not padded to the
    1,000 of the largest one, and at most :data:`MAX_BATCH` per pass."""
    buckets = defaultdict(list)
    for index, size in enumerate(sizes):
        buckets[1 << math.ceil(math.log2(max(size, 1)))].append(index)
    return [indices[start:start + MAX_BATCH] for indices in buckets.values()
            for start in range(0, len(indices), MAX_BATCH)]


def pad(arrays: list[np.ndarray], length: int) -> torch.Tensor:
    """Stack along a new client axis, zero-padding axis 0 of each to ``length``."""
    out = np.zeros((len(arrays), length, *arrays[0].shape[1:]), dtype=arrays[0].dtype)
    for k, a in enumerate(arrays):
        out[k, :len(a)] = a
    return torch.from_numpy(out)


def adam_step(tables: dict[str, torch.Tensor], grads: dict[str, torch.Tensor],
              privates: list[Arrays], lr: float
              ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """One step of every client's own Adam on its tables [clients, rows, ...], batched:
    torch.optim.Adam's update (defaults, as the clients' optimizer), with each client's step
    count and moments read from its private state `privates` (fresh when it has none) in the
    layout of :func:`fedsim.optim.save_adam` (parameter i = the i-th table, keys "adam.<i>.*").
    Returns the new tables and the new Adam state ("<i>.exp_avg", ...; per client along axis 0)."""
    beta1, beta2 = BETAS
    new_tables, state = {}, {}
    for i, name in enumerate(tables):
        shape = tables[name].shape[1:]
        steps = torch.tensor([float(p.get(f"adam.{i}.step", [0.0])[0]) for p in privates],
                             dtype=torch.float64)  # torch's Adam: corrections in double
        exp_avg, exp_avg_sq = [
            pad([p.get(f"adam.{i}.{m}", np.zeros((len(p[name]), *shape[1:]), np.float32))
                 for p in privates], shape[0]) for m in ("exp_avg", "exp_avg_sq")]
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
