"""Trade-off figure of the "raid" table: attack AUC against NDCG@10, per defence, from the
table's cached runs (it never starts a run).

    python experiments/raid_figure.py [--seeds 0 1 2] [--runs runs/tables]

Writes experiments/figures/raid_tradeoff.png: one panel per attacked attribute; x = test
NDCG@10 (full ranking), y = attack AUC on the released user embeddings (filled: MLP, hollow:
logistic regression); points are means over the cached seeds, bars their standard deviation;
RAID's points are joined in order of beta. The dashed line is chance (AUC 0.5): a defence wants
points near it at the right.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from figure_script import figure_main, save  # experiments/ is this script's directory
from tables import cached_rows

METRICS = ("ndcg@10_full", "attack_mlp_auc", "attack_logreg_auc")
STYLE = {"undefended": {"marker": "*", "color": "black", "s": 160},
         "noise": {"marker": "^", "color": "tab:green", "s": 70},
         "RAID": {"marker": "o", "color": "tab:blue", "s": 50}}


def collect(seeds: list[int], runs: Path) -> tuple[dict, list[str]]:
    """{attribute: {defence: {metric: [values over cached seeds]}}}, and the labels of rows
    with no cached run."""
    values: dict[str, dict[str, dict[str, list[float]]]] = {}
    found, missing = cached_rows(["raid"], seeds, runs, list(METRICS))
    for row, columns in found:
        attribute, _, defence = row.label.partition(": ")
        values.setdefault(attribute, {})[defence] = columns
    return values, missing


def _mean_std(series: list[float]) -> tuple[float, float]:
    return statistics.mean(series), statistics.stdev(series) if len(series) > 1 else 0.0


def draw(values: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(values), figsize=(6.5 * len(values), 5), squeeze=False)
    for axis, (attribute, defences) in zip(axes[0], values.items()):
        raid_line: dict[str, list[float]] = {"x": [], "y": []}
        for defence, series in defences.items():
            kind = defence.split()[0]
            style = STYLE[kind]
            x, x_err = _mean_std(series["ndcg@10_full"])
            for probe, filled in (("attack_mlp_auc", True), ("attack_logreg_auc", False)):
                y, y_err = _mean_std(series[probe])
                axis.errorbar(x, y, xerr=x_err, yerr=y_err, fmt="none", ecolor=style["color"],
                              alpha=0.5, capsize=2)
                axis.scatter(x, y, marker=style["marker"], s=style["s"],
                             facecolors=style["color"] if filled else "none",
                             edgecolors=style["color"],
                             label=f"{defence.split(' beta')[0]}, {'MLP' if filled else 'LogReg'}")
                if kind == "RAID" and filled:
                    raid_line["x"].append(x)
                    raid_line["y"].append(y)
                    axis.annotate(defence.removeprefix("RAID "), (x, y), fontsize=8,
                                  xytext=(4, 4), textcoords="offset points")
        axis.plot(raid_line["x"], raid_line["y"], color=STYLE["RAID"]["color"], alpha=0.4)
        axis.axhline(0.5, color="gray", linestyle="--", linewidth=1)
        axis.set(xlabel="test NDCG@10 (full ranking)", ylabel="attack AUC",
                 title=f"MovieLens-100K, MF: {attribute}")
        axis.grid(alpha=0.3)
    handles = dict(zip(*reversed(axes[0][0].get_legend_handles_labels())))  # one per label
    figure.legend(handles.values(), handles.keys(), loc="lower center", ncol=len(handles),
                  fontsize=8)
    figure.tight_layout(rect=(0, 0.07, 1, 1))
    save(figure, out)


def main(argv: list[str] | None = None) -> int:
    return figure_main("raid", "raid_tradeoff.png", __doc__.split("\n\n")[0], collect, draw, argv)


if __name__ == "__main__":
    sys.exit(main())
