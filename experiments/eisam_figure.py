"""Head/tail figure of the "eisam" table: SASRec vs EISAM E1 and E2, from the table's cached runs
(it never starts a run).

    python experiments/eisam_figure.py [--seeds 0 1 2] [--runs runs/tables]

Writes experiments/figures/eisam_head_tail.png: HR@10 (left) and NDCG@10 (right), full ranking,
for all test targets, head targets (top 20% of items by training count) and tail targets; bars
are means over the cached seeds, whiskers their standard deviation, at the table's selection
(best validation round).
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from figure_script import figure_main, save  # experiments/ is this script's directory
from tables import cached_rows

GROUPS = {"": "all targets", "_head": "head targets", "_tail": "tail targets"}


def collect(seeds: list[int], runs: Path) -> tuple[dict[str, dict[str, list[float]]], list[str]]:
    """{row label: {column: [values over the cached seeds]}}, and the rows with no cached run."""
    found, missing = cached_rows(["eisam"], seeds, runs)
    return {row.label: columns for row, columns in found}, missing


def draw(values: dict[str, dict[str, list[float]]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    width = 0.8 / len(values)
    for axis, metric in zip(axes, ("hr", "ndcg")):
        for k, (label, series) in enumerate(values.items()):
            columns = [f"{metric}@10_full{group}" for group in GROUPS]
            means = [statistics.mean(series[c]) for c in columns]
            spreads = [statistics.stdev(series[c]) if len(series[c]) > 1 else 0.0
                       for c in columns]
            positions = [i + (k - (len(values) - 1) / 2) * width for i in range(len(GROUPS))]
            axis.bar(positions, means, width, yerr=spreads, capsize=2, label=label,
                     color=f"C{k}")
        axis.set_xticks(range(len(GROUPS)), list(GROUPS.values()))
        seeds = len(next(iter(next(iter(values.values())).values())))
        axis.set(title=f"MovieLens-100K: {metric.upper()}@10, full ranking ({seeds} seeds)",
                 ylabel=f"{metric.upper()}@10")
        axis.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    save(figure, out)


def main(argv: list[str] | None = None) -> int:
    return figure_main("eisam", "eisam_head_tail.png", __doc__.split("\n\n")[0], collect, draw, argv)


if __name__ == "__main__":
    sys.exit(main())
