"""The "raid-audit" section of experiments/README.md: `fedsim audit` on the cached RAID runs
(beta > 0) of the "raid" table, plain against oriented attacker (it never starts a training
run). Without RAID the plain attacker scores above 0.5 and the oriented one never swaps, so
the other rows would repeat the table.

    FEDSIM_DATA_DIR=../shared/data python experiments/raid_audit.py [--seeds 0 1 2]
        [--runs runs/tables]

For each row and seed whose run is cached, the audit (fedsim/audit.py) attacks the run's final
released user embeddings for the row's attribute and writes the run's audit.json (kept and
reused while it holds that attribute). The plain AUCs equal the table's own final-round attack
scores (same embeddings, same splits); the oriented attacker also checks its direction on its
shadow set (fedsim/metrics/attribute_inference.py). Cells are mean ± std over the seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tables import HERE, TABLES, cell, run_dir, write_section  # experiments/ is on the path

from fedsim.audit import FILE, audit_run

COLUMNS = {"mlp_auc": "MLP AUC", "oriented_mlp_auc": "MLP AUC, oriented",
           "logreg_auc": "LogReg AUC", "oriented_logreg_auc": "LogReg AUC, oriented"}
SEEDS = 5  # attacker splits, as raid.attack_seeds in the table's spec


def audited(out: Path, attribute: str) -> dict:
    """The audit scores of ``attribute`` for the run in ``out``, from its audit.json if that
    holds them, else from a new audit."""
    report_file = out / FILE
    if report_file.is_file():
        report = json.loads(report_file.read_text())
        if attribute in report["attributes"] and report["attacker"]["seeds"] == SEEDS:
            return report["attributes"][attribute]
    return audit_run(out, [attribute], seeds=SEEDS)["attributes"][attribute]


def render(seeds: list[int], runs: Path) -> str:
    lines = ["`fedsim audit` on the final released user embeddings of the raid table's runs; "
             f"mean ± std over seeds {', '.join(map(str, seeds))}.", "",
             "| run | " + " | ".join(COLUMNS.values()) + " |", "|---|" + "---|" * len(COLUMNS)]
    for row in (r for r in TABLES["raid"].rows if r.overrides["raid.beta"] > 0):
        outs = [run_dir(row, seed, runs)[1] for seed in seeds]
        outs = [out for out in outs if (out / "summary.json").is_file()]
        if not outs:
            print(f"raid audit: not run yet, left out: {row.label}")
            continue
        scores = [audited(out, row.overrides["raid.attribute"]) for out in outs]
        lines.append(f"| {row.label} | " + " | ".join(
            cell([s[name] for s in scores]) for name in COLUMNS) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--runs", type=Path, default=Path("runs/tables"))
    args = parser.parse_args(argv)
    write_section("raid-audit", render(args.seeds, args.runs))
    print(f"raid-audit: written to {HERE / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
