"""Cohort mode against a plain sequential PyTorch loop of the same FedRecGEL math (issue 6).

    FEDSIM_DATA_DIR=../shared/data python benchmarks/cohort_bench.py SPEC.toml
        [--rounds R] [--set key=value ...] [--skip-framework]

Three ways to run the spec's first R rounds (FedRecGEL faithful, or FedNCF with rho = 0):

- plain loop: no Flower, no Ray, no messages. One process keeps every user's embedding and
  Adam state in memory and, client after client, gathers the rows of its sample, takes the
  base gradient and the SAM passes with autograd, steps the user's Adam, and finally takes the
  server's mean and Adam step. Written here independently of clients/ and strategies/ (only
  the round samples come from the client class, so that both draw the same negatives);
- framework, one client at a time (``cohort = false``): the real Ray simulation;
- framework, cohort mode (``cohort = true``): the same, each node's clients in one pass.

Printed per way: wall seconds, seconds per round (median over rounds for the framework, from
metrics.jsonl), client updates per second, and the final sampled HR@10 / NDCG@10 of the
sampled protocol (all users, the 99 fixed negatives), which must agree across the three.
Evaluation is only at the last round (``eval_every`` = R, ``eval_full_every`` large) so that
the timings are of training.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from clients.fedncf import FedNCFClient
from fedsim.metrics.leave_one_out import evaluate_users
from fedsim.federation import load_federation
from fedsim.metrics.pooling import pooled_means
from fedsim.methods import METHODS
from fedsim.models import backbone
from fedsim.runner.simulation import simulate
from fedsim.spec import load_file, parse_set, resolve


def plain_loop(spec: dict, history: list | None = None) -> tuple[float, dict[str, float], int]:
    """(wall seconds, final sampled metrics, client updates) of the plain sequential loop.

    With a `history` list, the loop also evaluates as the framework does (all users, at round
    0, every ``eval_every`` rounds and the last; full ranking every ``eval_full_every`` and the
    last) and appends per round {"round", "train_seconds", "eval_seconds", **metrics}; the
    wall time then includes evaluation."""
    torch.set_num_threads(1)  # as one Ray actor
    federation = load_federation(spec)
    data, parts = federation.dataset, federation.train_parts
    model_cls, sizes = backbone(spec)
    full = {k: v.clone() for k, v in METHODS[spec["method"]].initial_arrays(spec, federation)
            .to_torch_state_dict().items()}
    shared_names = [k for k in full if k.startswith(model_cls.SHARED_PREFIXES)]
    params = {k: torch.nn.Parameter(full[k]) for k in shared_names}
    server = torch.optim.Adam(params.values(), lr=spec["fedncf.server_lr"])
    rho_sh = spec["fedrecgel.rho_sh"] if spec["method"] == "fedrecgel" else 0.0
    rho_ns = spec["fedrecgel.rho_ns"] if spec["method"] == "fedrecgel" else 0.0
    samplers = {}
    users: dict[int, dict[str, torch.Tensor]] = {}
    adams: dict[int, dict] = {}
    local = model_cls(0, 0, **sizes)
    updates = 0
    started = time.perf_counter()
    if history is not None:
        history.append({"round": 0, **_evaluate(spec, federation, params, users, samplers, 0)})
    for server_round in range(1, spec["rounds"] + 1):
        round_start = time.perf_counter()
        count = max(1, int(len(parts) * spec["fraction"]))
        sampled = sorted(np.random.default_rng([spec["seed"], server_round])
                         .choice(len(parts), count, replace=False))
        total = {k: torch.zeros_like(v) for k, v in params.items()}
        for p in sampled:
            client = samplers.setdefault(p, FedNCFClient(spec, int(p)))
            u, items, labels = client.round_sample(server_round)
            rows, local_items = np.unique(items, return_inverse=True)
            if p not in users:  # the clients' first-contact initialisation
                users[p] = {k: torch.from_numpy(v) for k, v in client.private_state(
                    _Empty()).items()}
            leaves = {**{k: params[k].detach()[rows].clone() if k in model_cls.ITEM_TABLES
                         else params[k].detach().clone() for k in shared_names},
                      **{k: v.clone() for k, v in users[p].items()}}
            for v in leaves.values():
                v.requires_grad_(True)
            batch = (torch.from_numpy(u), torch.from_numpy(local_items),
                     torch.from_numpy(labels))

            def loss() -> torch.Tensor:
                logits = torch.func.functional_call(local, leaves, batch[:2])
                return sum(torch.nn.functional.binary_cross_entropy_with_logits(
                    logits[s:s + spec["fedncf.chunk_size"]], batch[2][s:s + spec["fedncf.chunk_size"]])
                    for s in range(0, len(logits), spec["fedncf.chunk_size"]))

            names = list(leaves)
            base = dict(zip(names, torch.autograd.grad(loss(), [leaves[n] for n in names])))
            grads = dict(base)
            for rho, group in ((rho_sh, shared_names), (rho_ns, list(users[p]))):
                if rho == 0:
                    continue
                norm = torch.sqrt(sum((base[n] ** 2).sum() for n in group))
                with torch.no_grad():
                    steps = {n: rho * base[n] / (norm + 1e-12) for n in group}
                    saved = {n: leaves[n].detach().clone() for n in group}
                    for n in group:
                        leaves[n].add_(steps[n])
                grads.update(zip(group, torch.autograd.grad(loss(), [leaves[n] for n in group])))
                with torch.no_grad():
                    for n in group:
                        leaves[n].copy_(saved[n])
            own = [torch.nn.Parameter(users[p][k].clone()) for k in users[p]]
            for param, name in zip(own, users[p]):
                param.grad = grads[name]
            optimizer = torch.optim.Adam(own, lr=spec["fedncf.client_lr"])
            if p in adams:
                optimizer.load_state_dict(adams[p])
            optimizer.step()
            adams[p] = optimizer.state_dict()
            users[p] = {k: param.detach() for k, param in zip(users[p], own)}
            for k in shared_names:
                if k in model_cls.ITEM_TABLES:
                    total[k].index_add_(0, torch.from_numpy(rows), grads[k])
                else:
                    total[k] += grads[k]
            updates += 1
        for k, param in params.items():
            param.grad = total[k] / len(sampled)
        server.step()
        if history is not None:
            trained = time.perf_counter() - round_start
            due = server_round % spec["eval_every"] == 0 or server_round == spec["rounds"]
            history.append({"round": server_round, "train_seconds": trained, **(
                _evaluate(spec, federation, params, users, samplers, server_round) if due
                else {})})
    wall = time.perf_counter() - started
    if history is not None:
        return wall, {k: v for k, v in history[-1].items() if "@" in k}, updates
    everyone = np.concatenate(parts)
    tables = {k: torch.cat([users[p][k] if p in users else torch.from_numpy(
        samplers.setdefault(p, FedNCFClient(spec, int(p))).private_state(_Empty())[k])
        for p in range(len(parts))]) for k in model_cls.USER_TABLES}
    model = model_cls.from_arrays({**{k: v.detach().numpy() for k, v in params.items()},
                                   **{k: v.numpy() for k, v in tables.items()}})
    with torch.no_grad():
        sums = evaluate_users(model, data, everyone, spec["data.head_fraction"], full=False)
    return wall, pooled_means(sums), updates


def _evaluate(spec: dict, federation, params: dict, users: dict, samplers: dict,
              server_round: int) -> dict[str, float]:
    """The framework's evaluation of every user with the loop's current parameters: sampled
    ranking, and full ranking where the framework computes it; with its wall time."""
    started = time.perf_counter()
    model_cls, _ = backbone(spec)
    parts = federation.train_parts
    for p in range(len(parts)):  # first contact, as in training (kept: drawn once)
        if p not in users:
            users[p] = {k: torch.from_numpy(v) for k, v in samplers.setdefault(
                p, FedNCFClient(spec, int(p))).private_state(_Empty()).items()}
    tables = {k: torch.cat([users[p][k] for p in range(len(parts))])
              for k in model_cls.USER_TABLES}
    model = model_cls.from_arrays({**{k: v.detach().numpy() for k, v in params.items()},
                                   **{k: v.numpy() for k, v in tables.items()}})
    full = server_round % spec["eval_full_every"] == 0 or server_round == spec["rounds"]
    with torch.no_grad():
        sums = evaluate_users(model, federation.dataset, np.concatenate(parts),
                              spec["data.head_fraction"], full=full)
    return {**pooled_means(sums), "eval_seconds": time.perf_counter() - started}


class _Empty:
    """A private store with nothing saved yet."""

    @staticmethod
    def load():
        return None


def framework(spec: dict, cohort: bool) -> tuple[float, float, dict[str, float], int]:
    """(wall s, median s per round, final metrics, updates) of the real Ray simulation."""
    summary, out = simulate({**spec, "cohort": cohort})
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    per_round = statistics.median(r["round_seconds"] for r in records if r["round"] > 0)
    updates = sum(r.get("train_clients", 0) for r in records)
    return summary["wall_seconds"], per_round, summary["final"], updates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("spec")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--skip-framework", action="store_true")
    args = parser.parse_args()
    spec = resolve({**load_file(args.spec), **parse_set(args.set), "rounds": args.rounds,
                    "eval_every": args.rounds, "eval_full_every": 100_000})
    print(f"{args.spec}: {spec['method']} on {spec['dataset']}, {args.rounds} rounds, "
          f"fraction {spec['fraction']}")
    wall, metrics, updates = plain_loop(spec)
    print(f"  plain loop        : {wall:8.1f} s, {wall / args.rounds:6.2f} s/round, "
          f"{updates / wall:8.1f} updates/s, hr@10 {metrics['hr@10']:.4f} "
          f"ndcg@10 {metrics['ndcg@10']:.4f}")
    if args.skip_framework:
        return
    for cohort in (False, True):
        fw_wall, per_round, final, fw_updates = framework(spec, cohort)
        print(f"  framework cohort={str(cohort).lower():5}: {fw_wall:8.1f} s, {per_round:6.2f} "
              f"s/round (median), {fw_updates / fw_wall:8.1f} updates/s, hr@10 "
              f"{final['hr@10']:.4f} ndcg@10 {final['ndcg@10']:.4f}; plain loop / this = "
              f"{wall / fw_wall:.2f}x")


if __name__ == "__main__":
    main()
