"""Time per round against the number of participating clients (issue 6's scaling curve).

    python benchmarks/scaling_bench.py [--users 1000 10000 100000] [--out PLOT.png] [--overwrite]

FedRecGEL (both SAM passes on) on the synthetic recommendation set with ``--users`` users, one
user per client, 10% of them a round, cohort mode, as real Ray simulations. Evaluation happens
only at round 0 and the last round (sampled protocol), so rounds 1 .. R-1 time training alone;
the median of those is printed with clients per second and the peak resident memory of the
process tree (driver, Ray, actors), and the curve is plotted log-log with a line of slope 1
(linear growth) for reference, into a new runs/scaling-<time>.png unless ``--out`` names a file
(an existing one is replaced only with ``--overwrite``: benchmarks/scaling.png is tracked).
"""

from __future__ import annotations

import argparse
import json
import statistics
from datetime import datetime
from pathlib import Path

from fedrec_bench import PeakMemory
from fedsim.runner.simulation import simulate
from fedsim.spec import resolve

ROUNDS = 4


def time_per_round(users: int) -> tuple[int, float, int]:
    """(clients per round, median seconds of a training-only round, peak bytes)."""
    spec = resolve({"dataset": "synthetic-rec", "method": "fedrecgel", "data.synthetic_users": users,
                    "fraction": 0.1, "rounds": ROUNDS, "eval_every": ROUNDS,
                    "eval_full_every": 100_000, "fedrecgel.rho_sh": 0.01, "fedrecgel.rho_ns": 0.1})
    # No out_dir: each run gets a fresh runs/<method>-<dataset>-<time> folder, so the bench
    # can be run again (a fixed folder holding the last run's results would be refused).
    with PeakMemory() as memory:
        _, out = simulate(spec)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    training = [r for r in records if 0 < r["round"] < ROUNDS]
    return (training[0]["train_clients"],
            statistics.median(r["round_seconds"] for r in training), memory.peak)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--out", default=None, help="the plot (default: a new "
                        "runs/scaling-<time>.png)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    args = parser.parse_args()
    out = Path(args.out or f"runs/scaling-{datetime.now():%Y%m%d-%H%M%S}.png")
    if out.exists() and not args.overwrite:  # before the runs, not after minutes of them
        parser.error(f"{out} exists; name another --out, or add --overwrite to replace it")
    points = []
    for users in args.users:
        clients, seconds, peak = time_per_round(users)
        points.append((clients, seconds))
        print(f"{users:7d} users: {clients:6d} clients/round, {seconds:7.2f} s/round, "
              f"{clients / seconds:8.1f} clients/s, peak memory {peak / 2**30:.2f} GiB",
              flush=True)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clients, seconds = zip(*points)
    figure, axis = plt.subplots(figsize=(5, 4))
    axis.loglog(clients, seconds, "o-", label="cohort mode (measured)")
    axis.loglog(clients, [seconds[0] * c / clients[0] for c in clients], "--", color="grey",
                label="linear in clients")
    axis.set(xlabel="participating clients per round", ylabel="seconds per round",
             title="FedRecGEL, synthetic data, 10% of users a round")
    axis.legend()
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120)
    print(f"plot: {out}")


if __name__ == "__main__":
    main()
