"""Regenerate the result tables of experiments/README.md from the experiment specs.

    FEDSIM_DATA_DIR=../shared/data python experiments/tables.py fedfact-main [--seeds 0 1 2]

A table is a list of rows; a row is a spec file (plus overrides) run once per seed as a real
Flower simulation on Ray (:func:`fedsim.runner.simulation.simulate`). A run whose summary.json
already holds the same resolved spec is reused, so re-rendering costs nothing and an interrupted
regeneration continues where it stopped. Cells are mean ± standard deviation over the seeds
(the training seed, which also draws the partition). The markdown replaces the text between
``<!-- begin:NAME -->`` and ``<!-- end:NAME -->`` in experiments/README.md.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

from fedsim.runner.simulation import simulate
from fedsim.spec import load_file, resolve

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Row:
    label: str
    spec: str  # path relative to experiments/
    overrides: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Table:
    title: str
    rows: list[Row]
    columns: list[str]  # metric names
    selection: str = "final"  # "final", "best_test" or "best_val"


def _fedfact_rows() -> list[Row]:
    rows = []
    for dataset in ("adult", "compas"):
        for split in ("dirichlet", "hetero"):
            prefix = f"fedfact/{dataset}_{split}"
            rows.append(Row(f"{dataset} {split} FedAvg", f"{prefix}_fedavg.toml"))
            for stage in ("post", "in"):
                for variant, name in (("g", "g"), ("l", "l"), ("gl", "g&l")):
                    rows.append(Row(f"{dataset} {split} FedFACT^{name} ({stage.title()})",
                                    f"{prefix}_fedfact_{stage}.toml",
                                    {"fedfact.variant": variant}))
    return rows


def _criteria_rows() -> list[Row]:
    """Equal opportunity and equalized odds as the constrained criterion (Dirichlet splits)."""
    rows = []
    for dataset in ("adult", "compas"):
        prefix = f"fedfact/{dataset}_dirichlet"
        rows.append(Row(f"{dataset} FedAvg", f"{prefix}_fedavg.toml"))
        for criterion in ("eop", "eo"):
            for stage in ("post", "in"):
                rows.append(Row(f"{dataset} FedFACT^g&l ({stage.title()}, {criterion.upper()})",
                                f"{prefix}_fedfact_{stage}.toml",
                                {"fedfact.criterion": criterion}))
    return rows


def _tradeoff_rows() -> list[Row]:
    """(xi_g, xi_l) in {0, 0.02, 0.04}^2 for FedFACT^g&l, Dirichlet splits."""
    levels = (0.0, 0.02, 0.04)
    return [Row(f"{dataset} {stage.title()} ({xi_g:.2f}, {xi_l:.2f})",
                f"fedfact/{dataset}_dirichlet_fedfact_{stage}.toml",
                {"fedfact.xi_global": xi_g, "fedfact.xi_local": xi_l})
            for dataset in ("adult", "compas") for stage in ("post", "in")
            for xi_g in levels for xi_l in levels]


TABLES = {
    "fedfact-main": Table(
        title="Binary demographic parity: accuracy and DP gaps (final round)",
        rows=_fedfact_rows(),
        columns=["accuracy", "dp_global", "dp_local_max"],
    ),
    "fedfact-criteria": Table(
        title="Equal opportunity and equalized odds (Dirichlet splits, final round)",
        rows=_criteria_rows(),
        # For binary labels the pairwise EO gap equals the EOP one (max over both classes), so
        # the group-vs-population form, the constraints' own form, is shown beside it.
        columns=["accuracy", "eop_global", "eop_local_max", "eop_pop_global", "eop_pop_local_max"],
    ),
    "fedfact-tradeoff": Table(
        title="Trade-off of FedFACT^g&l over (xi_g, xi_l) (Dirichlet splits, DP, final round)",
        rows=_tradeoff_rows(),
        columns=["accuracy", "dp_global", "dp_local_max"],
    ),
}


def run_row(row: Row, seed: int, runs: Path) -> dict:
    spec = resolve({**load_file(HERE / row.spec), **row.overrides, "seed": seed})
    tag = "-".join([Path(row.spec).stem, *(f"{k}={v}" for k, v in row.overrides.items()),
                    f"seed{seed}"])
    out = runs / re.sub(r"[^A-Za-z0-9_.=-]", "_", tag)
    summary_file = out / "summary.json"
    if summary_file.is_file():
        summary = json.loads(summary_file.read_text())
        if {k: v for k, v in summary["spec"].items() if k != "out_dir"} == \
                {k: v for k, v in spec.items() if k != "out_dir"}:
            return summary
    summary, _ = simulate(spec, out_dir=out)
    return summary


def cell(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def render(table: Table, seeds: list[int], runs: Path) -> str:
    lines = [f"{table.title}; mean ± std over seeds {', '.join(map(str, seeds))}.", "",
             "| run | " + " | ".join(table.columns) + " |",
             "|---|" + "---|" * len(table.columns)]
    for row in table.rows:
        summaries = [run_row(row, seed, runs) for seed in seeds]
        picked = [s[table.selection] if table.selection == "final" else s[table.selection]["metrics"]
                  for s in summaries]
        lines.append(f"| {row.label} | " + " | ".join(
            cell([p[c] for p in picked]) for c in table.columns) + " |")
    return "\n".join(lines)


def write_section(name: str, markdown: str, readme: Path = HERE / "README.md") -> None:
    text = readme.read_text()
    begin, end = f"<!-- begin:{name} -->", f"<!-- end:{name} -->"
    if begin not in text:
        text += f"\n{begin}\n{end}\n"
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{begin}\n{markdown}\n{end}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tables", nargs="+", choices=sorted(TABLES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--runs", type=Path, default=Path("runs/tables"))
    args = parser.parse_args(argv)
    for name in args.tables:
        write_section(name, render(TABLES[name], args.seeds, args.runs))
        print(f"{name}: written to {HERE / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
