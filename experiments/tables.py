"""Build the result tables of experiments/README.md from the experiment specs.

    FEDSIM_DATA_DIR=../shared/data python experiments/tables.py fedfact-main [--seeds 0 1 2]
    python experiments/tables.py fedfact-main --cached-only --seeds 0      # only what has run
    python experiments/tables.py fedfact-main --write      # into experiments/README.md
    python experiments/tables.py --rows my.toml runs/a runs/b --like fedfact-main   # your own

A table is a list of rows; a row is a spec file (plus overrides) run once per seed as a real
Flower simulation on Ray (:func:`fedsim.runner.simulation.simulate`). A run whose summary.json
already holds the same resolved spec is reused, so re-rendering costs nothing and an interrupted
regeneration continues where it stopped. Cells are mean ± standard deviation over the seeds
(the training seed, which also draws the partition).

Tables are printed. ``--write`` replaces the text between ``<!-- begin:NAME -->`` and
``<!-- end:NAME -->`` in experiments/README.md (a tracked file), and only with a complete table:
a table with a "not run" cell (``--cached-only`` and a missing run) is printed but not written,
and the command exits 1, so measured rows are never replaced by "not run".

``--rows`` builds a table from your own spec files (each run per seed, cached under ``--runs``
like the named tables' rows) and run folders (a folder with a summary.json: that run, as it is),
one row each, with the columns and selection of the table named by ``--like`` or given by
``--columns`` and ``--selection``.
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
from fedsim.spec import DEFAULTS, load_file, resolve

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
    # Metric names, or "selection:metric" to override `selection`, or
    # "protocol/selection:metric" to take the value from the row's run with data.protocol =
    # protocol (a row that shows two protocols comes from a run of each).
    columns: list[str]
    selection: str = "final"  # "final", "best_test", "best_val" or "best_val_later"


def _fedfact_rows() -> list[Row]:
    rows = []
    for dataset in ("adult", "compas"):
        for split in ("dirichlet", "hetero"):
            prefix = f"fedfact/{dataset}_{split}"
            rows.append(Row(f"{dataset} {split} FedAvg", f"{prefix}_fedavg.toml"))
            rows.append(Row(f"{dataset} {split} FairFed", f"{prefix}_fairfed.toml"))
            rows.append(Row(f"{dataset} {split} FedFB", f"{prefix}_fedfb.toml"))
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


def _multiclass_rows() -> list[Row]:
    """adult-hours (3 classes x 3 race groups), Dirichlet split: FedAvg and FedFACT post."""
    post = "fedfact/adult_hours_dirichlet_fedfact_post.toml"
    return [Row("FedAvg", "fedfact/adult_hours_dirichlet_fedavg.toml"),
            *(Row(f"FedFACT^{name} (Post)", post, {"fedfact.variant": variant})
              for variant, name in (("g", "g"), ("l", "l"), ("gl", "g&l"))),
            Row("FedFACT^g&l (Post, EOP)", post, {"fedfact.criterion": "eop"}),
            Row("FedFACT^g&l (Post, plain lambda step)", post, {"fedfact.dual_step": "plain"})]


def _scaling_rows() -> list[Row]:
    """Adult, N in {2, 5, 10, 20, 50} clients, all taking part, split over sex by the specs'
    sampler at the paper's scalability setting gamma = 5 (alpha = 2 x 5 = 10 in LoGoFair's
    sampler, fedsim/partition dirichlet_capped): at the main tables' alpha = 1, 20 or more
    clients cannot all get 20 rows of each sex below the n/N cap."""
    rows = []
    for n in (2, 5, 10, 20, 50):
        clients = {"num_clients": n, "partition.alpha": 10.0}
        rows.append(Row(f"N={n} FedAvg", "fedfact/adult_dirichlet_fedavg.toml", clients))
        rows.append(Row(f"N={n} FedFACT^g&l (Post)", "fedfact/adult_dirichlet_fedfact_post.toml",
                        {"fedfact.variant": "gl", **clients}))
    return rows




def _fedrecgel_rows(stem: str) -> list[Row]:
    """FedNCF, FedMF, FedRecGEL (authors' algorithm) and FedRecGEL item-centric on one dataset,
    all on the FedRecGEL spec's protocol (the baselines only change the method/backbone)."""
    spec = f"fedrecgel/fedrecgel_{stem}.toml"
    return [Row("FedNCF", spec, {"method": "fedncf"}),
            Row("FedMF", spec, {"method": "fedmf", "model": "mf"}),
            Row("FedRecGEL", spec),
            Row("FedRecGEL item-centric", f"fedrecgel/fedrecgel_item_centric_{stem}.toml"),
            # The authors' PFedRec settings (pfedrec.* defaults) at this protocol's 10% of
            # clients a round; its model is its own (the spec's `model` is not used).
            Row("PFedRec", spec, {"method": "pfedrec"})]


PFEDREC_SETS = {"movielens100k": "ML-100K", "amazon_video": "Amazon-Video"}


RHO_GRID = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)  # the authors' sensitivity grid


def _fedrecgel_rho_rows() -> list[Row]:
    """FilmTrust rho sensitivity, one radius varied at a time from the authors' final FilmTrust
    run (rho_sh 0, rho_ns 0.02), evaluated every 5 rounds (CPU budget) instead of every round.
    Labels are "<varied radius>=<value>", which experiments/fedrecgel_rho_figure.py splits on
    "="; the shared point (0, 0.02) has the same overrides in both sweeps, so it runs once."""
    spec = "fedrecgel/fedrecgel_filmtrust.toml"

    def row(label: str, rho_sh: float, rho_ns: float) -> Row:
        return Row(label, spec, {"eval_every": 5, "fedrecgel.rho_sh": rho_sh,
                                 "fedrecgel.rho_ns": rho_ns})

    return ([row(f"rho_sh={rho:g}", rho, 0.02) for rho in RHO_GRID]
            + [row(f"rho_ns={rho:g}", 0.0, rho) for rho in RHO_GRID])


RECOMMENDATION_SETS = {"filmtrust": "FilmTrust", "movielens100k": "ML-100K",
                       "lastfm2k": "Lastfm-2K", "amazon_video": "Amazon-Video"}

# Paper protocol (runs with data.protocol = "fedrecgel", the authors' split): the best round on
# test, sampled ranking (99 negatives), as the authors, with the round each seed's run picked;
# beside it the mean over the last 10 evaluated rounds. Clean protocol (runs with data.protocol =
# "clean": duplicates merged, a validation item): the best round on the validation item under
# full ranking, then its test full-ranking metrics overall and on tail items (bottom 80% by
# training count). The radius sweep shows both; the dataset tables show one protocol each
# ("fedrecgel-<dataset>" and "fedrecgel-<dataset>-clean"), so each can be written once its runs
# are complete.
FEDREC_PAPER_COLUMNS = ["fedrecgel/best_test:hr@10", "fedrecgel/best_test:ndcg@10",
                        "fedrecgel/best_test:round",
                        "fedrecgel/last10_test:hr@10", "fedrecgel/last10_test:ndcg@10"]
FEDREC_CLEAN_COLUMNS = ["clean/best_val_full:hr@10_full", "clean/best_val_full:ndcg@10_full",
                        "clean/best_val_full:hr@10_full_tail", "clean/best_val_full:round"]
# The radius sweep (one seed) shows both protocols, without the rounds.
FEDREC_COLUMNS = [column for column in FEDREC_PAPER_COLUMNS + FEDREC_CLEAN_COLUMNS
                  if not column.endswith(":round")]

def _eisam_rows() -> list[Row]:
    """SASRec and EISAM (E1, E2) on MovieLens-100K, single client (experiments/centralized)."""
    spec = "centralized/eisam_movielens100k.toml"
    return [Row("SASRec", "centralized/sasrec_movielens100k.toml"),
            Row("EISAM E1", spec), Row("EISAM E2", spec, {"eisam.mode": "e2"})]


def _eisam_rho_rows() -> list[Row]:
    """EISAM's radius, one seed: the spec's rho = 0.05 against 10x and 40x. Overrides name only
    what differs from the spec, so the rho = 0.05 rows reuse the "eisam" table's runs."""
    rows = [Row("SASRec (rho = 0)", "centralized/sasrec_movielens100k.toml")]
    for mode in ("e1", "e2"):
        for rho in (0.05, 0.5, 2.0):
            overrides = {**({"eisam.mode": mode} if mode != "e1" else {}),
                         **({"eisam.rho": rho} if rho != 0.05 else {})}
            rows.append(Row(f"EISAM {mode.upper()} rho = {rho}",
                            "centralized/eisam_movielens100k.toml", overrides))
    return rows


# Overall, head-target and tail-target test metrics (full ranking) at the best validation round.
EISAM_COLUMNS = [f"{metric}@10_full{group}" for group in ("", "_head", "_tail")
                 for metric in ("hr", "ndcg")]

def _aurl_rows(datasets=(("ML-100K", "movielens100k"),),
               backbones=(("BPR-MF", "bprmf"), ("LightGCN", "lightgcn"))) -> list[Row]:
    """Per dataset and backbone: the plain backbone (both AURL weights 0) and AURL, single
    client (experiments/centralized). Labels are "<dataset> <backbone> <variant>", which
    experiments/aurl_figure.py splits on the first space."""
    plain = {"aurl.lambda_ga": 0.0, "aurl.lambda_gu": 0.0}
    return [Row(f"{dataset} {backbone} {variant}", f"centralized/aurl_{stem}_{model}.toml",
                overrides)
            for dataset, stem in datasets for backbone, model in backbones
            for variant, overrides in (("plain", plain), ("AURL", {}))]


def _aurl_sweep_rows() -> list[Row]:
    """The (lambda_ga, lambda_gu) sweep that chose the defaults: BPR-MF, ML-100K, 20 epochs."""
    return [Row(f"({ga:g}, {gu:g})", "centralized/aurl_movielens100k_bprmf.toml",
                {"rounds": 20, "eval_every": 5, "aurl.lambda_ga": ga, "aurl.lambda_gu": gu})
            for ga, gu in ((0.0, 0.0), (0.1, 0.1), (1.0, 0.1), (0.1, 1.0), (1.0, 1.0),
                           (5.0, 0.5))]


# Test metrics (full ranking) at the best validation NDCG@10 round: overall, tail items, inactive
# users, and popularity bias (docs/centralized.md, AURL).
AURL_COLUMNS = ["ndcg@20_full", "ndcg@20_full_tail", "ndcg@20_full_inactive", "hr@20_full",
                "pru", "tail_exposure@20", "exposure_gap@20"]

RAID_ATTRIBUTES = {"gender": "gender", "age_30": "age < 30 / >= 30"}
RAID_BETAS = (0.001, 0.01, 0.1)
RAID_NOISE = 0.5  # x the RMS entry: costs about RAID's NDCG (docs/centralized.md, RAID)


def _raid_rows() -> list[Row]:
    """Per attacked attribute: undefended MF, the post-training noise baseline and RAID over
    beta, single client (experiments/centralized). Labels are "<attribute>: <defence>", which
    experiments/raid_figure.py splits on the colon."""
    spec = "centralized/raid_movielens100k.toml"
    return [Row(f"{label}: {defence}", spec, {"raid.attribute": attribute, **overrides})
            for attribute, label in RAID_ATTRIBUTES.items()
            for defence, overrides in (
                ("undefended", {"raid.beta": 0.0}),
                (f"noise {RAID_NOISE:g}", {"raid.beta": 0.0, "raid.noise": RAID_NOISE}),
                *((f"RAID beta={beta:g}", {"raid.beta": beta}) for beta in RAID_BETAS))]


# Test HR/NDCG@10 (full ranking) and the attack on the released user embeddings, final round.
RAID_COLUMNS = ["hr@10_full", "ndcg@10_full", "attack_mlp_auc", "attack_mlp_f1",
                "attack_mlp_bacc", "attack_logreg_auc"]

TABLES = {
    "raid": Table(
        title="RAID on MF, MovieLens-100K: test HR/NDCG@10 (full ranking) and the attribute "
              "attack (MLP: AUC, macro-F1, balanced accuracy; LogReg: AUC) on the released user "
              "embeddings, final round (epoch 12)",
        rows=_raid_rows(),
        columns=RAID_COLUMNS,
    ),
    "aurl": Table(
        title="AURL vs the plain backbone: test NDCG@20 overall / tail items / inactive users, "
              "HR@20 (= Recall@20), PRU, tail exposure and exposure gap @20, full ranking, at "
              "the best validation NDCG@10 round",
        rows=_aurl_rows(),
        columns=AURL_COLUMNS,
        selection="best_val",
    ),
    "aurl-final": Table(
        title="The runs of table aurl at their last epoch (30) instead of the best validation "
              "round",
        rows=_aurl_rows(),
        columns=AURL_COLUMNS,
    ),
    "aurl-more": Table(
        title="AURL vs the plain backbone on Lastfm-2K and Amazon-Video (ML-100K settings, "
              "not tuned), columns as table aurl, at the best validation NDCG@10 round",
        rows=_aurl_rows((("Lastfm-2K", "lastfm2k"), ("Amazon-Video", "amazon_video"))),
        columns=AURL_COLUMNS,
        selection="best_val",
    ),
    "aurl-sweep": Table(
        title="AURL weight sweep, BPR-MF on ML-100K, 20 epochs: best validation NDCG@10, and "
              "test NDCG@20 overall / tail, PRU and exposure gap@20 at that round",
        rows=_aurl_sweep_rows(),
        columns=["val_ndcg@10_full", "ndcg@20_full", "ndcg@20_full_tail", "pru",
                 "exposure_gap@20"],
        selection="best_val",
    ),
    "eisam": Table(
        title="EISAM on SASRec, MovieLens-100K: test HR/NDCG@10, full ranking, overall / head "
              "(top-20% items) / tail targets, at the best validation NDCG@10 round",
        rows=_eisam_rows(),
        columns=EISAM_COLUMNS,
        selection="best_val",
    ),
    "eisam-rho": Table(
        title="EISAM radius on MovieLens-100K (one seed): validation NDCG@10 (the selection "
              "metric) and test metrics at the best validation round, full ranking",
        rows=_eisam_rho_rows(),
        columns=["val_ndcg@10_full", *EISAM_COLUMNS],
        selection="best_val",
    ),
    "fedrecgel-rho": Table(
        title="FedRecGEL radius sensitivity on FilmTrust (one seed, evaluated every 5 rounds): "
              "one radius varied, the other at the authors' FilmTrust value (rho_sh 0, rho_ns "
              "0.02); paper protocol (best test round, sampled) and clean protocol (best "
              "validation round, full ranking)",
        rows=_fedrecgel_rho_rows(),
        columns=FEDREC_COLUMNS,
    ),
    "pfedrec": Table(
        title="PFedRec on its authors' protocol (data.protocol = pfedrec, every client every "
              "round, 100 rounds): test HR@10 / NDCG@10 (99 sampled negatives) at the best "
              "validation HR@10 round, the later round on ties (the authors' selection)",
        rows=[Row(f"{label} PFedRec", f"pfedrec/pfedrec_{stem}.toml")
              for stem, label in PFEDREC_SETS.items()],
        columns=["hr@10", "ndcg@10", "round"],
        selection="best_val_later",
    ),
    "fedfact-main": Table(
        title="Binary demographic parity: accuracy and DP gaps (final round)",
        rows=_fedfact_rows(),
        columns=["accuracy", "dp_global", "dp_global_floor", "dp_local_max", "dp_local_max_floor"],
    ),
    "fedfact-criteria": Table(
        title="Equal opportunity and equalized odds (Dirichlet splits, final round)",
        rows=_criteria_rows(),
        # For binary labels the pairwise EO gap equals the EOP one (max over both classes), so
        # the group-vs-population form, the constraints' own form, is shown beside it.
        columns=["accuracy", "eop_global", "eop_global_floor", "eop_local_max",
                 "eop_local_max_floor", "eop_pop_global", "eop_pop_global_floor",
                 "eop_pop_local_max", "eop_pop_local_max_floor"],
    ),
    "fedfact-multiclass": Table(
        title="Multi-class: adult-hours, 3 classes x 3 race groups (Dirichlet split, final round)",
        rows=_multiclass_rows(),
        columns=["accuracy", "dp_global", "dp_global_floor", "dp_local_max", "dp_local_max_floor",
                 "eop_global", "eop_global_floor", "eop_local_max", "eop_local_max_floor"],
    ),
    "fedfact-scaling": Table(
        title="Client scaling on Adult (LoGoFair's sampler over sex, gamma = 5, DP, final round)",
        rows=_scaling_rows(),
        columns=["accuracy", "dp_global", "dp_global_floor", "dp_local_max", "dp_local_max_floor",
                 "dp_local_mean", "dp_local_mean_floor"],
    ),
    "fedfact-tradeoff": Table(
        title="Trade-off of FedFACT^g&l over (xi_g, xi_l) (Dirichlet splits, DP, final round)",
        rows=_tradeoff_rows(),
        columns=["accuracy", "dp_global", "dp_global_floor", "dp_local_max", "dp_local_max_floor"],
    ),
}


def _fedrecgel_tables(stem: str, label: str) -> dict[str, Table]:
    """One dataset's paper-protocol table and clean-protocol table, of the same rows."""
    name, rows = f"fedrecgel-{stem.replace('_', '-')}", _fedrecgel_rows(stem)
    return {name: Table(title=f"{label}: FedRecGEL and baselines, paper protocol (the authors' "
                              "split, best round on test, sampled ranking)",
                        rows=rows, columns=FEDREC_PAPER_COLUMNS),
            f"{name}-clean": Table(title=f"{label}: FedRecGEL and baselines, clean protocol "
                                         "(validation item, best validation round, full ranking)",
                                   rows=rows, columns=FEDREC_CLEAN_COLUMNS)}


for _stem, _label in RECOMMENDATION_SETS.items():
    TABLES.update(_fedrecgel_tables(_stem, _label))


def run_dir(row: Row, seed: int, runs: Path) -> tuple[dict, Path]:
    """The resolved spec of `row` with `seed`, and the folder under `runs` its run goes to."""
    spec = resolve({**load_file(HERE / row.spec), **row.overrides, "seed": seed})
    tag = "-".join([Path(row.spec).stem, *(f"{k}={v}" for k, v in row.overrides.items()),
                    f"seed{seed}"])
    return spec, runs / re.sub(r"[^A-Za-z0-9_.=-]", "_", tag)


def run_row(row: Row, seed: int, runs: Path, cached_only: bool = False) -> dict | None:
    """The summary of `row` run with `seed`: the cached one if its spec is unchanged, else a
    new run (with `cached_only`, None instead)."""
    spec, out = run_dir(row, seed, runs)
    summary_file = out / "summary.json"
    if summary_file.is_file():
        summary = json.loads(summary_file.read_text())
        if same_run(summary["spec"], spec):
            return summary
    if cached_only:
        return None
    # The folder is this row's cache: a run of an older spec (or one that did not finish) is
    # replaced.
    summary, _ = simulate(spec, out_dir=out, overwrite=True)
    return summary


def cached_rows(names: list[str], seeds: list[int], runs: Path, columns: list[str] | None = None
                ) -> tuple[list[tuple[Row, dict[str, list[float]]]], list[str]]:
    """For the figure scripts (which never start a run): the rows of tables ``names`` that have a
    cached run, each with {column: [its value in each cached seed's run]} at its table's
    selection (``columns``, default each table's own), and the labels of the rows not run."""
    found, missing = [], []
    for table in (TABLES[name] for name in names):
        for row in table.rows:
            values = {}
            for column in columns or table.columns:
                column_row, metric = column_run(row, column)
                summaries = [s for seed in seeds if (s := run_row(column_row, seed, runs,
                                                                  cached_only=True)) is not None]
                values[column] = [_pick(s, metric, table.selection) for s in summaries]
            if not all(values.values()):
                missing.append(row.label)
                continue
            found.append((row, values))
    return found, missing


def column_run(row: Row, column: str) -> tuple[Row, str]:
    """The run a column's value comes from and the column without its protocol: for
    "protocol/selection:metric", `row` with data.protocol = protocol."""
    protocol, slash, metric = column.partition("/")
    if not slash:
        return row, column
    return Row(row.label, row.spec, {**row.overrides, "data.protocol": protocol}), metric


# Keys that say where and how fast a run executes, not what it computes: a cached run that
# differs from the spec only in these is the same run. (`nodes` regroups clients into messages;
# in cohort mode that moves only the float summation order, tests/test_cohort.py.)
PLACEMENT_KEYS = frozenset({"out_dir", "state_dir", "nodes", "ray.client_cpus", "ray.address"})


def same_run(cached: dict, spec: dict) -> bool:
    """Whether a cached run's resolved spec is `spec`, placement keys aside. A key the cached
    spec lacks was added to the schema after the run; it matches at its default, since a new
    key's default keeps the behaviour that existed before it."""
    return set(cached) <= set(spec) and all(
        name in PLACEMENT_KEYS
        or (cached[name] == value if name in cached else value == DEFAULTS[name])
        for name, value in spec.items())


def cell(values: list[float]) -> str:
    if all(isinstance(value, int) for value in values):  # rounds: each seed's, not a mean
        return ", ".join(map(str, values))
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


NOT_RUN = "not run"


def render(table: Table, seeds: list[int], runs: Path, cached_only: bool = False) -> str:
    """The table's markdown, running what is not cached; with `cached_only`, from cached runs
    alone, a row missing any seed shown as "not run"."""
    lines = [f"{table.title}; mean ± std over seeds {', '.join(map(str, seeds))}.", "",
             "| run | " + " | ".join(table.columns) + " |",
             "|---|" + "---|" * len(table.columns)]
    for row in table.rows:
        cells = [row_cell(row, column, table.selection, seeds, runs, cached_only)
                 for column in table.columns]
        lines.append(f"| {row.label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def row_cell(row: Row, column: str, selection: str, seeds: list[int], runs: Path,
             cached_only: bool) -> str:
    """One cell: over the seeds' runs of a spec row; from the run itself for a run-folder row
    (:func:`own_table`; "-" for a protocol column of another data.protocol)."""
    folder = Path(row.spec)
    if folder.is_absolute() and folder.is_dir():
        summary = json.loads((folder / "summary.json").read_text())
        protocol, slash, metric = column.rpartition("/")
        same = not slash or summary["spec"].get("data.protocol") == protocol
        return cell([_pick(summary, metric, selection)]) if same else "-"
    column_row, metric = column_run(row, column)
    summaries = [run_row(column_row, seed, runs, cached_only) for seed in seeds]
    return NOT_RUN if None in summaries else cell([_pick(s, metric, selection)
                                                   for s in summaries])


def not_run_rows(markdown: str) -> list[str]:
    """Labels of the rows of a rendered table with a "not run" cell."""
    return [line.split(" | ")[0].removeprefix("| ") for line in markdown.splitlines()
            if line.startswith("| ") and f"| {NOT_RUN} |" in line]


def own_table(paths: list[Path], columns: list[str], selection: str) -> Table:
    """A table of your own: one row per spec file (run per seed, cached as any row) or run
    folder (a folder holding a summary.json: that run as it is) in `paths`."""
    rows = []
    for path in map(Path, paths):
        path = path.resolve()
        if path.is_dir() and (path / "summary.json").is_file():
            rows.append(Row(path.name, str(path)))
        elif path.is_file() and path.suffix == ".toml":
            rows.append(Row(path.stem, str(path)))
        else:
            raise ValueError(f"{path} is neither a spec file (.toml) nor a run folder (with a "
                             "summary.json)")
    return Table(title=f"Own table, {selection} (run-folder rows: that run alone)", rows=rows,
                 columns=columns, selection=selection)


def _pick(summary: dict, column: str, selection: str) -> float:
    """A column's value in a summary: "metric" at the table's selection, or
    "selection:metric" at its own ("final", "best_test", "last10_test", "best_val",
    "best_val_later", "best_val_full"); "round" is the selected round."""
    selection, _, metric = column.rpartition(":") if ":" in column else (selection, "", column)
    if metric == "round":
        return summary["final_round"] if selection == "final" else summary[selection]["round"]
    record = summary[selection] if selection == "final" else summary[selection]["metrics"]
    if metric.endswith("_floor") and metric not in record:
        return float("nan")  # a run from before the noise floors (fedsim/metrics/fairness.py)
    return record[metric]


def write_section(name: str, markdown: str, readme: Path = HERE / "README.md") -> None:
    text = readme.read_text()
    begin, end = f"<!-- begin:{name} -->", f"<!-- end:{name} -->"
    if begin not in text:
        text += f"\n{begin}\n{end}\n"
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{begin}\n{markdown}\n{end}{tail}")


# Marker and colour of each method family in the figures.
FAMILY_STYLE = {"FedAvg": {"marker": "*", "color": "black", "s": 140},
                "FairFed": {"marker": "v", "color": "tab:green", "s": 50},
                "FedFB": {"marker": "^", "color": "tab:purple", "s": 50},
                "FedFACT Post": {"marker": "o", "color": "tab:blue", "s": 30},
                "FedFACT In": {"marker": "s", "color": "tab:orange", "s": 30}}


def family(label: str) -> str:
    """The method family of a row of fedfact-main or fedfact-tradeoff, from its label."""
    named = [name for name in ("FedAvg", "FairFed", "FedFB") if name in label]
    return named[0] if named else ("FedFACT In" if re.search(r"\bIn\b", label)
                                   else "FedFACT Post")


def pareto_front(gaps: list[float], accuracies: list[float]) -> tuple[list[float], list[float]]:
    """The points no other point beats on both (smaller gap, higher accuracy), by gap."""
    front: list[tuple[float, float]] = []
    for gap, accuracy in sorted(zip(gaps, accuracies), key=lambda p: (p[0], -p[1])):
        if not front or accuracy > front[-1][1]:
            front.append((gap, accuracy))
    return [p[0] for p in front], [p[1] for p in front]


def pareto_figure(seeds: list[int], runs: Path,
                  out: Path = HERE / "figures" / "fedfact_pareto.png") -> list[str]:
    """Accuracy against the global and the worst client's DP gap, Dirichlet splits.

    One point per row of fedfact-main and fedfact-tradeoff (mean over those of `seeds` that
    are cached: the trade-off rows have seed 0 only), one line per family through its Pareto
    front. Drawn from cached runs only: returns the labels of rows with none, which are left out.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points: dict[tuple[str, str], list[dict]] = {}
    missing = []
    for name in ("fedfact-main", "fedfact-tradeoff"):
        for row in (r for r in TABLES[name].rows if "hetero" not in r.spec):
            finals = [s["final"] for seed in seeds
                      if (s := run_row(row, seed, runs, cached_only=True)) is not None]
            if not finals:
                missing.append(f"{name}: {row.label}")
                continue
            points.setdefault((row.label.split()[0], family(row.label)), []).append(
                {k: statistics.mean(f[k] for f in finals)
                 for k in ("accuracy", "dp_global", "dp_local_max")})
    gaps = {"dp_global": "global DP gap", "dp_local_max": "worst client's DP gap"}
    figure, axes = plt.subplots(2, 2, figsize=(10, 8), sharey="row")
    for i, dataset in enumerate(("adult", "compas")):
        for j, (gap, title) in enumerate(gaps.items()):
            axis = axes[i, j]
            for name, style in FAMILY_STYLE.items():
                cloud = points.get((dataset, name), [])
                if cloud:
                    x, y = [p[gap] for p in cloud], [p["accuracy"] for p in cloud]
                    axis.scatter(x, y, label=name, **style)
                    axis.plot(*pareto_front(x, y), color=style["color"], alpha=0.5,
                              drawstyle="steps-post")
            axis.set(xlabel=title, ylabel="accuracy", title=f"{dataset}, Dirichlet(0.5)")
            axis.grid(alpha=0.3)
    axes[0, 0].legend()
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100)
    plt.close(figure)
    return missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tables", nargs="*", metavar="TABLE",
                        help=f"table names ({', '.join(sorted(TABLES))}); \"figures\" draws "
                        "experiments/figures/ from cached runs")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--runs", type=Path, default=Path("runs/tables"))
    parser.add_argument("--cached-only", action="store_true",
                        help='render from cached runs only, rows not run marked "not run"')
    parser.add_argument("--write", action="store_true",
                        help="write each complete table into experiments/README.md (a table "
                        'with a "not run" cell is not written; exit 1)')
    parser.add_argument("--rows", nargs="+", type=Path, metavar="SPEC_OR_RUN_DIR",
                        help="your own table: one row per spec file or run folder")
    parser.add_argument("--like", choices=sorted(TABLES),
                        help="--rows: take this table's columns and selection")
    parser.add_argument("--columns", nargs="+", help="--rows: the columns (metric, "
                        '"selection:metric" or "protocol/selection:metric")')
    parser.add_argument("--selection", default="final",
                        help="--rows: the round whose metrics fill the cells (final, "
                        "best_test, last10_test, best_val, best_val_full)")
    args = parser.parse_args(argv)
    if not args.tables and not args.rows:
        parser.error("name a table, figures, or --rows")
    if unknown := [name for name in args.tables if name not in (*TABLES, "figures")]:
        parser.error(f"unknown tables {unknown}: expected {', '.join(sorted(TABLES))} or figures")
    if args.rows:
        if args.write:
            parser.error("--write takes named tables only (your own table is printed)")
        like = TABLES[args.like] if args.like else None
        columns = args.columns or (like.columns if like else None)
        if not columns:
            parser.error("--rows needs --like TABLE or --columns")
        try:
            table = own_table(args.rows, columns, like.selection if like and not args.columns
                              else args.selection)
        except ValueError as err:
            parser.error(str(err))
        print(render(table, args.seeds, args.runs, args.cached_only) + "\n")
    status = 0
    for name in args.tables:
        if name == "figures":
            for label in pareto_figure(args.seeds, args.runs):
                print(f"figures: not run yet, left out: {label}")
            print(f"figures: written to {HERE / 'figures'}")
            continue
        markdown = render(TABLES[name], args.seeds, args.runs, args.cached_only)
        print(f"<!-- {name} -->\n{markdown}\n")
        if not args.write:
            continue
        if missing := not_run_rows(markdown):
            print(f"{name}: not written: {len(missing)} rows not run ({', '.join(missing[:3])}"
                  f"{', ...' if len(missing) > 3 else ''}); the README keeps its table. Run "
                  "them (without --cached-only) to write it", file=sys.stderr)
            status = 1
            continue
        write_section(name, markdown)
        print(f"{name}: written to {HERE / 'README.md'}")
    return status


if __name__ == "__main__":
    sys.exit(main())
