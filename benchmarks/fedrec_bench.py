"""Benchmark federated recommendation runs: time, throughput, traffic and memory per spec.

    FEDSIM_DATA_DIR=../shared/data python benchmarks/fedrec_bench.py SPEC.toml [SPEC.toml ...]
        [--set key=value ...]

Each spec runs as a real Flower simulation on Ray (fedsim.runner.simulation.simulate). Printed
per run: wall time (ServerApp start to last round), seconds per round, client updates per
second (training replies / wall time), training bytes per client-round each way against the
bytes of a full shared model (what a client would receive without item-sparse messages), and
the peak resident memory of this process and all its children (driver, Ray, actors), sampled
every 0.2 s.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from pathlib import Path

from fedsim.runner.simulation import simulate
from fedsim.spec import load_file, parse_set, resolve


def tree_rss(root: int) -> int:
    """Resident bytes of `root` and all its descendants, read from /proc (Linux)."""
    parents, rss = {}, {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            status = dict(line.split(":", 1) for line in (proc / "status").read_text().splitlines()
                          if ":" in line)
        except OSError:
            continue
        parents[int(proc.name)] = int(status["PPid"])
        rss[int(proc.name)] = int(status.get("VmRSS", "0 kB").split()[0]) * 1024
    tree, changed = {root}, True
    while changed:
        grown = tree | {pid for pid, parent in parents.items() if parent in tree}
        changed, tree = grown != tree, grown
    return sum(rss.get(pid, 0) for pid in tree)


class PeakMemory:
    """Largest summed RSS of this process tree while the context is open."""

    def __init__(self, interval: float = 0.2):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss(os.getpid()))
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakMemory":
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("specs", nargs="+")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    for path in args.specs:
        spec = resolve({**load_file(path), **parse_set(args.set)})
        started = time.perf_counter()
        with PeakMemory() as memory:
            summary, out = simulate(spec)
        total = time.perf_counter() - started
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        updates = sum(r.get("train_clients", 0) for r in records)
        full_model = summary["bytes_eval_down"] / max(1, summary["num_clients"]) / max(
            1, sum(1 for r in records if "hr@10" in r))
        print(f"{path}: {summary['method']} on {summary['dataset']}, {summary['num_clients']} "
              f"clients, {summary['rounds']} rounds")
        print(f"  wall {summary['wall_seconds']:.1f} s (process {total:.1f} s), "
              f"{summary['wall_seconds'] / summary['rounds']:.2f} s/round, "
              f"{updates / summary['wall_seconds']:.1f} client updates/s")
        print(f"  training bytes per client-round: up {summary['bytes_up'] / updates / 1e3:.1f} KB"
              f", down {summary['bytes_down'] / updates / 1e3:.1f} KB; full shared model "
              f"{full_model / 1e3:.1f} KB")
        print(f"  peak memory (process tree) {memory.peak / 2**30:.2f} GiB")
        print(f"  best_test {summary['best_test']['round']}: hr@10 "
              f"{summary['best_test']['metrics']['hr@10']:.4f}  final hr@10 "
              f"{summary['final']['hr@10']:.4f}")


if __name__ == "__main__":
    main()
