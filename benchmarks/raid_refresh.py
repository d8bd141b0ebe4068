"""Time one RAID refresh (barycenter + per-class plans + targets) at MovieLens-100K size.

    FEDSIM_DATA_DIR=../shared/data python benchmarks/raid_refresh.py [--dim 64] [--repeats 3]

The users and their gender (or ``--attribute``) are ML-100K's; the embeddings are Gaussian with
a class shift of 0.5 per dimension (a leak; the time does not depend on the values much). For
each support size m it prints the median wall and CPU seconds of
:func:`fedsim.centralized.transport.class_barycenter` and of
:func:`fedsim.centralized.transport.projection_targets`, and the gap between the class means of
the embeddings and of the targets.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from fedsim.centralized.transport import class_barycenter, projection_targets
from fedsim.data import load_dataset


def timed(call):
    wall, cpu = time.perf_counter(), time.process_time()
    result = call()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--attribute", default="gender")
    parser.add_argument("--support", type=int, nargs="+", default=[64, 128, 256, 471])
    args = parser.parse_args()
    classes = load_dataset("movielens-100k").user_attributes[args.attribute]
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(len(classes), args.dim)) + 0.5 * classes[:, None]
    gap = lambda y: float(np.linalg.norm(y[classes == 0].mean(0) - y[classes == 1].mean(0)))
    print(f"{len(classes)} users, d = {args.dim}, classes {np.bincount(classes).tolist()}, "
          f"class-mean gap {gap(embeddings):.3f}")
    for m in args.support:
        runs = []
        for repeat in range(args.repeats):
            points, b_wall, b_cpu = timed(lambda: class_barycenter(
                embeddings, classes, m, np.random.default_rng(repeat)))
            targets, p_wall, p_cpu = timed(lambda: projection_targets(embeddings, classes, points))
            runs.append((b_wall, b_cpu, p_wall, p_cpu))
        b_wall, b_cpu, p_wall, p_cpu = (statistics.median(column) for column in zip(*runs))
        print(f"m = {m}: barycenter {b_wall:.2f} s wall ({b_cpu:.2f} s CPU), plans + targets "
              f"{p_wall:.3f} s wall ({p_cpu:.3f} s CPU); target class-mean gap {gap(targets):.1e}")


if __name__ == "__main__":
    main()
