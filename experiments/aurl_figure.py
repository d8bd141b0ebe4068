"""Head/tail figure of the "aurl" and "aurl-more" tables: NDCG@20 per item and user group, and
popularity bias, plain backbone vs AURL, from the tables' cached runs (it never starts a run).

    python experiments/aurl_figure.py [--seeds 0 1 2] [--runs runs/tables]

Writes experiments/figures/aurl_head_tail.png: one row of panels per dataset; left,
NDCG@20 on head items, tail items, active users and inactive users; right, PRU and the
exposure gap@20; bars are means over the cached seeds, whiskers their standard deviation, at
the table's selection (best validation round).
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from figure_script import figure_main, save  # experiments/ is this script's directory
from tables import cached_rows

GROUPS = {"ndcg@20_full_head": "head items", "ndcg@20_full_tail": "tail items",
          "ndcg@20_full_active": "active users", "ndcg@20_full_inactive": "inactive users"}
BIAS = {"pru": "PRU", "exposure_gap@20": "exposure gap@20"}


def collect(seeds: list[int], runs: Path) -> tuple[dict, list[str]]:
    """{dataset: {row label without dataset: {metric: [values over cached seeds]}}}, and the
    labels of rows with no cached run."""
    values: dict[str, dict[str, dict[str, list[float]]]] = {}
    found, missing = cached_rows(["aurl", "aurl-more"], seeds, runs, [*GROUPS, *BIAS])
    for row, columns in found:
        dataset, _, config = row.label.partition(" ")
        values.setdefault(dataset, {})[config] = columns
    return values, missing


def draw(values: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(values), 2, figsize=(13, 3.6 * len(values)), squeeze=False,
                                gridspec_kw={"width_ratios": [2, 1]})
    for axis_row, (dataset, configs) in zip(axes, values.items()):
        for axis, metrics in zip(axis_row, (GROUPS, BIAS)):
            width = 0.8 / len(configs)
            for k, (config, series) in enumerate(configs.items()):
                means = [statistics.mean(series[m]) for m in metrics]
                spreads = [statistics.stdev(series[m]) if len(series[m]) > 1 else 0.0
                           for m in metrics]
                positions = [i + (k - (len(configs) - 1) / 2) * width for i in range(len(metrics))]
                axis.bar(positions, means, width, yerr=spreads, capsize=2, label=config,
                         hatch="" if "AURL" in config else "//",
                         color=f"C{k // 2}", alpha=1.0 if "AURL" in config else 0.45)
            axis.set_xticks(range(len(metrics)), list(metrics.values()))
            axis.axhline(0.0, color="black", linewidth=0.6)
            axis.grid(axis="y", alpha=0.3)
        axis_row[0].set(title=f"{dataset}: NDCG@20 (full ranking) by group", ylabel="NDCG@20")
        axis_row[1].set(title=f"{dataset}: popularity bias (0 = none)")
        axis_row[0].legend(fontsize=8)
    figure.tight_layout()
    save(figure, out)


def main(argv: list[str] | None = None) -> int:
    return figure_main("aurl", "aurl_head_tail.png", __doc__.split("\n\n")[0], collect, draw, argv)


if __name__ == "__main__":
    sys.exit(main())
