"""experiments/tables.py figures: Pareto fronts, method families, drawing from cached runs only."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _tables():
    """experiments/tables.py is a script, not a package module: load it from its path."""
    spec = importlib.util.spec_from_file_location("experiments_tables",
                                                  ROOT / "experiments" / "tables.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


tables = _tables()


def test_pareto_front_keeps_only_undominated_points():
    gaps = [0.10, 0.05, 0.20, 0.05, 0.15]
    accuracies = [0.80, 0.70, 0.90, 0.75, 0.78]  # (0.05, 0.70) and (0.15, 0.78) are dominated
    assert tables.pareto_front(gaps, accuracies) == ([0.05, 0.10, 0.20], [0.75, 0.80, 0.90])


def test_families_of_the_fedfact_table_labels():
    assert tables.family("adult dirichlet FedFACT^g&l (In)") == "FedFACT In"
    assert tables.family("compas In (0.02, 0.04)") == "FedFACT In"
    assert tables.family("adult Post (0.00, 0.02)") == "FedFACT Post"
    assert tables.family("adult dirichlet FedFACT^l (Post)") == "FedFACT Post"
    assert tables.family("compas dirichlet FairFed") == "FairFed"
    assert tables.family("adult dirichlet FedAvg") == "FedAvg"


def test_the_figure_is_drawn_from_cached_runs_and_lists_the_others(tmp_path, monkeypatch):
    cached = [tables.TABLES["fedfact-main"].rows[0], tables.TABLES["fedfact-tradeoff"].rows[0]]
    for row, accuracy in zip(cached, (0.84, 0.82)):
        spec, folder = tables.run_dir(row, 0, tmp_path)
        folder.mkdir()
        final = {"accuracy": accuracy, "dp_global": 0.1, "dp_local_max": 0.2}
        (folder / "summary.json").write_text(json.dumps({"spec": spec, "final": final}))
    monkeypatch.setattr(tables, "simulate", lambda *a, **k: (_ for _ in ()).throw(
        AssertionError("the figure must not start runs")))
    out = tmp_path / "pareto.png"
    missing = tables.pareto_figure([0], tmp_path, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    dirichlet_rows = [r for name in ("fedfact-main", "fedfact-tradeoff")
                      for r in tables.TABLES[name].rows if "hetero" not in r.spec]
    assert len(missing) == len(dirichlet_rows) - 2
    assert not any(row.label in label for row in cached for label in missing)


def test_fedrecgel_rho_sweep_covers_the_grid_and_runs_the_shared_point_once():
    rows = tables.TABLES["fedrecgel-rho"].rows
    varied = {}
    for row in rows:
        radius, rho = row.label.split("=")
        varied.setdefault(radius, []).append(float(rho))
        other = {"rho_sh": "fedrecgel.rho_ns", "rho_ns": "fedrecgel.rho_sh"}[radius]
        assert row.overrides[f"fedrecgel.{radius}"] == float(rho)
        assert row.overrides[other] == {"rho_sh": 0.02, "rho_ns": 0.0}[radius]
    assert varied == {"rho_sh": list(tables.RHO_GRID), "rho_ns": list(tables.RHO_GRID)}
    folders = {tables.run_dir(row, 0, Path("runs"))[1] for row in rows}
    assert len(folders) == 2 * len(tables.RHO_GRID) - 1  # (rho_sh 0, rho_ns 0.02) is in both


def test_cached_only_render_takes_each_protocol_from_its_own_run(tmp_path):
    """The paper columns come from the row's data.protocol = "fedrecgel" run, the clean ones
    from its "clean" run; a column whose run is missing says so, the others still show."""
    table = tables.TABLES["fedrecgel-rho"]
    row = table.rows[0]
    for protocol, scale in (("fedrecgel", 1.0), ("clean", 0.5)):
        spec, out = tables.run_dir(tables.column_run(row, f"{protocol}/x:y")[0], 0, tmp_path)
        assert spec["data.protocol"] == protocol
        out.mkdir(parents=True)
        metrics = {"hr@10": 0.5 * scale, "ndcg@10": 0.25 * scale, "hr@10_full": 0.125 * scale,
                   "ndcg@10_full": 0.0625 * scale, "hr@10_full_tail": 0.0}
        (out / "summary.json").write_text(json.dumps(
            {"spec": spec, "best_test": {"metrics": metrics},
             "last10_test": {"metrics": {k: v / 2 for k, v in metrics.items()}},
             "best_val_full": {"metrics": metrics}}))
    lines = tables.render(table, [0], tmp_path, cached_only=True).splitlines()
    assert lines[4] == (f"| {row.label} | 0.5000 | 0.2500 | 0.2500 | 0.1250 | 0.0625 | 0.0312 "
                        "| 0.0000 |")
    assert lines[5] == f"| {table.rows[1].label} | " + " | ".join(["not run"] * 7) + " |"
    assert len(lines) == 4 + len(table.rows)
    # Without the clean run, the paper columns still show.
    clean_dir = tables.run_dir(tables.column_run(row, "clean/x:y")[0], 0, tmp_path)[1]
    (clean_dir / "summary.json").unlink()
    line = tables.render(table, [0], tmp_path, cached_only=True).splitlines()[4]
    assert line == f"| {row.label} | 0.5000 | 0.2500 | 0.2500 | 0.1250 | " + " | ".join(
        ["not run"] * 3) + " |"


def test_a_cached_run_is_reused_across_placement_but_not_across_math():
    from fedsim.spec import resolve

    spec = resolve({"dataset": "synthetic-rec", "rounds": 3})
    assert tables.same_run(spec, {**spec, "nodes": 4, "out_dir": "elsewhere",
                                  "ray.client_cpus": 2})
    assert not tables.same_run(spec, {**spec, "rounds": 4})
    assert not tables.same_run(spec, {**spec, "cohort": not spec["cohort"]})
    # A key added to the schema after the cached run matches at its default only.
    older = {k: v for k, v in spec.items() if k != "eval_full_every"}
    assert tables.same_run(older, spec)
    assert not tables.same_run(older, {**spec, "eval_full_every": 7})


def _cache_eisam_runs(runs: Path, rows) -> None:
    for row in rows:
        spec, out = tables.run_dir(row, 0, runs)
        out.mkdir(parents=True)
        metrics = {name: 0.5 for name in tables.EISAM_COLUMNS}
        (out / "summary.json").write_text(json.dumps({"spec": spec, "best_val": {"metrics": metrics}}))


def test_tables_print_by_default_and_write_only_complete_tables(tmp_path, monkeypatch, capsys):
    written = []
    monkeypatch.setattr(tables, "write_section", lambda name, markdown: written.append(name))
    rows = tables.TABLES["eisam"].rows
    _cache_eisam_runs(tmp_path, rows[:2])  # the third row has not run
    args = ["eisam", "--cached-only", "--seeds", "0", "--runs", str(tmp_path)]
    assert tables.main(args) == 0 and not written  # printed, not written
    assert "| EISAM E1 | 0.5000" in capsys.readouterr().out
    assert tables.main([*args, "--write"]) == 1 and not written  # "not run" never written
    assert "eisam: not written: 1 rows not run (EISAM E2)" in capsys.readouterr().err
    _cache_eisam_runs(tmp_path, rows[2:])
    assert tables.main([*args, "--write"]) == 0 and written == ["eisam"]


def test_a_table_of_ones_own_run_folders_and_specs(tmp_path, capsys):
    folder = tmp_path / "my-run"
    folder.mkdir()
    (folder / "summary.json").write_text(json.dumps(
        {"spec": {"data.protocol": "clean"}, "final": {"accuracy": 0.81, "dp_global": 0.02}}))
    spec_row = tmp_path / "mine.toml"
    spec_row.write_text('dataset = "synthetic-tabular"\nmethod = "fedavg"\nmodel = "logreg"\n'
                        'partitioner = "iid"\nnum_clients = 4\n')
    runs = tmp_path / "runs"
    assert tables.main(["--rows", str(folder), str(spec_row), "--columns", "accuracy",
                        "dp_global", "--cached-only", "--seeds", "0", "--runs", str(runs)]) == 0
    out = capsys.readouterr().out
    assert "| my-run | 0.8100 | 0.0200 |" in out and "| mine | not run | not run |" in out
    with __import__("pytest").raises(SystemExit):
        tables.main(["--rows", str(tmp_path / "nothing"), "--columns", "accuracy"])


@pytest.mark.parametrize("dataset", list(tables.RECOMMENDATION_SETS))
def test_each_fedrecgel_dataset_has_a_paper_table_and_a_clean_table_of_the_same_rows(dataset):
    """The paper table reads only the authors'-split runs (the best round on test, sampled) and
    the clean one only the clean runs (the best validation round, full ranking), so each can be
    written as soon as its own runs are complete."""
    name = f"fedrecgel-{dataset.replace('_', '-')}"
    paper, clean = tables.TABLES[name], tables.TABLES[f"{name}-clean"]
    assert [r.label for r in paper.rows] == [r.label for r in clean.rows]
    assert {c.split("/")[0] for c in paper.columns} == {"fedrecgel"}
    assert {c.split("/")[0] for c in clean.columns} == {"clean"}
    assert {c.split("/")[1].split(":")[0] for c in paper.columns} == {"best_test", "last10_test"}
    assert {c.split("/")[1].split(":")[0] for c in clean.columns} == {"best_val_full"}
    for row in paper.rows:
        for table, protocol in ((paper, "fedrecgel"), (clean, "clean")):
            spec, _ = tables.run_dir(tables.column_run(row, table.columns[0])[0], 0, Path("runs"))
            assert spec["data.protocol"] == protocol, (row.label, table.title)
