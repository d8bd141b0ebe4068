"""Radius-sensitivity figure of the "fedrecgel-rho" table (FilmTrust), drawn as the FedRecGEL
paper does: HR@10 and NDCG@10 against rho, one curve per varied radius, from the table's cached
runs (it never starts a run).

    python experiments/fedrecgel_rho_figure.py [--seeds 0] [--runs runs/tables]

Writes experiments/figures/fedrecgel_rho.png. Left: the paper protocol (best test round,
99 sampled negatives); right: the clean protocol (best validation round, full ranking). The
x axis is the grid's index (the grid starts at 0, so a log axis cannot hold it).
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from figure_script import figure_main, save  # experiments/ is this script's directory
from tables import RHO_GRID, TABLES, _pick, run_row

PANELS = {"paper protocol (best test round, sampled)": ("best_test:hr@10", "best_test:ndcg@10"),
          "clean protocol (best validation round, full ranking)":
              ("best_val_full:hr@10_full", "best_val_full:ndcg@10_full")}


def collect(seeds: list[int], runs: Path) -> tuple[dict[str, dict[float, dict[str, float]]],
                                                   list[str]]:
    """{varied radius: {rho: {column: mean over the cached seeds}}}, and the rows not run."""
    table = TABLES["fedrecgel-rho"]
    values, missing = {}, []
    for row in table.rows:
        summaries = [s for seed in seeds
                     if (s := run_row(row, seed, runs, cached_only=True)) is not None]
        if not summaries:
            missing.append(row.label)
            continue
        radius, rho = row.label.split("=")
        values.setdefault(radius, {})[float(rho)] = {
            c: statistics.mean(_pick(s, c, table.selection) for s in summaries)
            for c in table.columns}
    return values, missing


def draw(values: dict[str, dict[float, dict[str, float]]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for axis, (title, (hr, ndcg)) in zip(axes, PANELS.items()):
        for k, (radius, points) in enumerate(sorted(values.items())):
            rhos = sorted(points)
            x = [RHO_GRID.index(rho) for rho in rhos]
            axis.plot(x, [points[r][hr] for r in rhos], "o-", color=f"C{k}",
                      label=f"HR@10, {radius} varied")
            axis.plot(x, [points[r][ndcg] for r in rhos], "s--", color=f"C{k}",
                      label=f"NDCG@10, {radius} varied")
        axis.set_xticks(range(len(RHO_GRID)), [f"{r:g}" for r in RHO_GRID])
        axis.set(title=f"FilmTrust, {title}", xlabel="rho", ylabel="metric")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    save(figure, out)


def main(argv: list[str] | None = None) -> int:
    return figure_main("fedrecgel-rho", "fedrecgel_rho.png", __doc__.split("\n\n")[0], collect,
                       draw, argv)


if __name__ == "__main__":
    sys.exit(main())
