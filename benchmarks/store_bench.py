"""Time the private-state store: one client's save and load, as a cross-device round does them.

    python benchmarks/store_bench.py [--clients 1000] [--rounds 7] [--repeats 3]

The state is what a FedNCF client keeps with the default NeuMF (``save_private``): its user rows
(GMF 32 and MLP 128 wide, float32) and their Adam moments and step counts, eight arrays made by
the real client code. Each round every client loads its newest version and saves the round's,
as training does (the store keeps two versions, so from round 3 on each save also deletes one).
It prints, per format, the median over rounds 3.. and repeats of the mean per-client load and
save time, wall and CPU (CPU time is the steadier figure on a shared machine).

The store's format (safetensors layout) is timed against the pickles it wrote before issue 20,
which could carry code. That format lives only here, for the comparison: the formats take turns
(first one, then the other) in the same process, so that both see the same machine.
"""

from __future__ import annotations

import argparse
import contextlib
import pickle
import statistics
import tempfile
import time

import numpy as np
import torch

from fedsim.app import private_store
from fedsim.app.private_store import PrivateStore
from fedsim.methods import METHODS
from fedsim.optim import save_adam
from fedsim.spec import resolve


class _Empty:
    """A store before the client's first save."""

    def load(self):
        return None


def client_state() -> dict[str, np.ndarray]:
    """One FedNCF client's private state after a training step, keyed as the client saves it."""
    client = METHODS["fedncf"].client_class()(resolve({"dataset": "synthetic-rec"}), 0)
    tables = client.private_state(_Empty())
    params = [torch.from_numpy(table).requires_grad_() for table in tables.values()]
    optimizer = torch.optim.Adam(params)
    sum((p ** 2).sum() for p in params).backward()
    optimizer.step()
    return {**tables, **{f"adam.{k}": v for k, v in save_adam(optimizer).items()}}


def _write_pickle(path, arrays):
    with open(path, "wb") as out:
        pickle.dump({name: np.asarray(value) for name, value in arrays.items()}, out,
                    protocol=pickle.HIGHEST_PROTOCOL)


def _read_pickle(path):
    with open(path, "rb") as saved:
        return pickle.load(saved)


@contextlib.contextmanager
def pickle_format():
    """The store as it was before issue 20: a pickle per version."""
    saved = (private_store.write_version, private_store.read_version, private_store.SUFFIX)
    private_store.write_version, private_store.read_version = _write_pickle, _read_pickle
    private_store.SUFFIX = ".pkl"
    try:
        yield
    finally:
        private_store.write_version, private_store.read_version, private_store.SUFFIX = saved


FORMATS = {"safetensors layout (the store)": contextlib.nullcontext,
           "pickle (before issue 20)": pickle_format}


def measure(state: dict[str, np.ndarray], clients: int, rounds: int) -> list[tuple[float, ...]]:
    """(load wall, load CPU, save wall, save CPU) ms per client of each round from round 3."""
    times = []
    with tempfile.TemporaryDirectory(prefix="store-bench-") as root:
        for server_round in range(1, rounds + 1):
            stores = [PrivateStore(root, "run", p, server_round - 1, server_round)
                      for p in range(clients)]
            marks = [(time.perf_counter(), time.process_time())]
            for store in stores:
                store.load()
            marks.append((time.perf_counter(), time.process_time()))
            for store in stores:
                store.save(state)
            marks.append((time.perf_counter(), time.process_time()))
            if server_round >= 3:
                times.append(tuple((b[i] - a[i]) / clients * 1e3 for a, b in zip(marks, marks[1:])
                                   for i in (0, 1)))
        check = PrivateStore(root, "run", 0, rounds, None).load()
    assert all(np.array_equal(check[k], v) and check[k].dtype == v.dtype for k, v in state.items())
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    state = client_state()
    print(f"state: {len(state)} arrays, {sum(a.nbytes for a in state.values())} bytes; "
          f"{args.clients} clients, rounds 3-{args.rounds}, {args.repeats} repeats")
    times = {name: [] for name in FORMATS}
    for repeat in range(args.repeats):
        for name, layout in list(FORMATS.items())[::1 if repeat % 2 == 0 else -1]:
            with layout():
                times[name] += measure(state, args.clients, args.rounds)
    print("ms per client (median)   load wall  load CPU  save wall  save CPU")
    for name, rows in times.items():
        print(f"{name:<31}" + "".join(f"{statistics.median(c):10.4f}" for c in zip(*rows)))


if __name__ == "__main__":
    main()
