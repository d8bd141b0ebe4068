"""Radius-sensitivity figure of the "fedrecgel-rho" table (FilmTrust), drawn as the FedRecGEL
paper does: HR@10 and NDCG@10 against rho, one curve per varied radius, from the table's cached
runs (it never starts a run).

    python experiments/fedrecgel_rho_figure.py [--seeds 0] [--runs runs/tables]

Writes experiments/figures/fedrecgel_rho.png. Top: the paper protocol (best test round,
99 sampled negatives); bottom: the clean protocol (best validation round, full ranking);
HR@10 left, NDCG@10 right. The x axis is the grid's index (the grid starts at 0, so a log axis cannot hold it).
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from figure_script import figure_main, save  # experiments/ is this script's directory
from tables import RHO_GRID, cached_rows

FIXED = {"rho_sh": "rho_ns = 0.02", "rho_ns": "rho_sh = 0"}  # the table's other radius
PANELS = {"paper protocol (best test round, sampled)": ("fedrecgel/best_test:hr@10",
                                                        "fedrecgel/best_test:ndcg@10"),
          "clean protocol (best validation round, full ranking)":
              ("clean/best_val_full:hr@10_full", "clean/best_val_full:ndcg@10_full")}


def collect(seeds: list[int], runs: Path) -> tuple[dict[str, dict[float, dict[str, float]]],
                                                   list[str]]:
    """{varied radius: {rho: {column: mean over the cached seeds}}}, and the rows not run."""
    values = {}
    found, missing = cached_rows(["fedrecgel-rho"], seeds, runs)
    for row, columns in found:
        radius, rho = row.label.split("=")
        values.setdefault(radius, {})[float(rho)] = {c: statistics.mean(v)
                                                     for c, v in columns.items()}
    return values, missing


def draw(values: dict[str, dict[float, dict[str, float]]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # One axis per protocol and metric: HR@10 and NDCG@10 differ in scale, and the radius
    # effects are small against either.
    figure, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
    for axis_row, (protocol, columns) in zip(axes, PANELS.items()):
        for axis, column in zip(axis_row, columns):
            for k, (radius, points) in enumerate(sorted(values.items())):
                rhos = sorted(points)
                axis.plot([RHO_GRID.index(rho) for rho in rhos],
                          [points[rho][column] for rho in rhos], "o-", color=f"C{k}",
                          label=f"{radius} varied ({FIXED[radius]})")
            metric = column.rpartition(":")[2].split("_")[0].upper()
            axis.set(title=f"FilmTrust {metric}, {protocol}", ylabel=metric)
            axis.set_xticks(range(len(RHO_GRID)), [f"{r:g}" for r in RHO_GRID])
            axis.title.set_fontsize(9)
            axis.grid(alpha=0.3)
    for axis in axes[1]:
        axis.set_xlabel("rho")
    axes[0][0].legend(fontsize=8)
    figure.tight_layout()
    save(figure, out)


def main(argv: list[str] | None = None) -> int:
    return figure_main("fedrecgel-rho", "fedrecgel_rho.png", __doc__.split("\n\n")[0], collect,
                       draw, argv)


if __name__ == "__main__":
    sys.exit(main())
