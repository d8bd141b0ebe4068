"""`fedsim run` never mixes results, says which round each printed figure is, and reports
failures: output folders, repeated configs, resume, runs that train nothing, data provenance."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest

from fedsim import cli
from fedsim.app.client_app import app as client_app
from fedsim.federation import load_federation
from fedsim.protocol import node_count
from fedsim.runner import simulation
from fedsim.runner.experiment import OutDirError, prepare_out_dir, run_on_grid
from fedsim.spec import resolve
from tests.fake_grid import FakeGrid

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TAB = ["--set", "dataset=synthetic-tabular", "--set", "method=fedavg", "--set", "model=logreg",
       "--set", "partitioner=iid", "--set", "num_clients=10", "--set", "fraction=1.0",
       "--set", "rounds=3", "--set", "nodes=2"]


@pytest.fixture
def on_fake_grid(monkeypatch):
    """`fedsim run` in this process with the in-process grid instead of Ray (the same
    preparation as simulate(): the output folder is checked and cleared before any work)."""
    def fake(spec, out_dir=None, on_record=None, resume=False, overwrite=False):
        out = Path(out_dir or spec["out_dir"]).resolve()
        prepare_out_dir(out, resume, overwrite)
        nodes = node_count(spec["nodes"], load_federation(spec).num_clients)
        return run_on_grid(FakeGrid(client_app, nodes), spec, out, on_record, resume), out

    monkeypatch.setattr(simulation, "simulate", fake)


def finished_run(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name in ("config.toml", "metrics.jsonl", "summary.json"):
        (folder / name).write_text("old\n")
    (folder / "client_state").mkdir()
    return folder


def test_a_new_run_refuses_a_folder_holding_a_run_and_overwrite_clears_it(tmp_path, capsys,
                                                                           on_fake_grid):
    out = finished_run(tmp_path / "run")
    assert cli.main(["run", *TAB, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "is not empty" in err and "--resume" in err and "--overwrite" in err
    assert (out / "metrics.jsonl").read_text() == "old\n"  # untouched
    assert cli.main(["run", *TAB, "--out", str(out), "--overwrite"]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    assert [r["round"] for r in records] == [0, 1, 2, 3]  # nothing appended to the old file
    assert not (out / "client_state").exists()  # FedAvg keeps no private state: the old went


def test_overwrite_never_clears_a_folder_that_holds_no_run(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "thesis.tex").write_text("precious")
    with pytest.raises(OutDirError, match="holds no fedsim run"):
        prepare_out_dir(folder, overwrite=True)
    assert (folder / "thesis.tex").read_text() == "precious"
    prepare_out_dir(tmp_path / "absent")  # absent or empty folders are fine


def test_a_runs_own_config_repeats_the_run_in_a_fresh_folder(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    spec = resolve({"rounds": 2, "out_dir": str(run)})
    from fedsim.spec import to_toml

    (run / "config.toml").write_text(to_toml(spec))
    args = cli.build_parser().parse_args(["run", str(run / "config.toml")])
    repeated = cli.resolve_run_spec(args)
    assert repeated["out_dir"] == "" and repeated["rounds"] == 2  # default: a new runs/ folder
    assert "repeating it in a new folder" in capsys.readouterr().err
    # A spec of one's own that names its out_dir keeps it (and is refused if that is not empty).
    own = tmp_path / "spec.toml"
    own.write_text(f'rounds = 2\nout_dir = "{run}"\n')
    assert cli.resolve_run_spec(cli.build_parser().parse_args(["run", str(own)]))["out_dir"] == \
        str(run)


def test_resume_says_from_which_round(tmp_path, capsys, on_fake_grid):
    out = tmp_path / "run"
    assert cli.main(["run", *TAB, "--out", str(out)]) == 0
    capsys.readouterr()
    assert cli.main(["run", "--resume", str(out)]) == 0
    assert f"resuming {out} from round 3 (of 3)" in capsys.readouterr().out


def test_failures_are_one_line_per_round_and_totals_in_the_summary(tmp_path, capsys, caplog,
                                                                    on_fake_grid):
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="flwr"):
        assert cli.main(["run", *TAB, "--set", "faults.rate=0.3", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    records = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    per_round = [r["failures"] for r in records]
    assert summary["failures"] == sum(per_round) > 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == sum(1 for f in per_round if f) <= 3  # one line per round at most
    assert all("clients failed" in w and "injected" in w for w in warnings)
    printed = capsys.readouterr().out
    assert f"failures: {summary['failures']} client failures" in printed
    assert all(r["skipped"] == 0 for r in records)  # every record says it, 0 or 1


def test_a_run_that_trained_nothing_exits_non_zero_and_says_why(tmp_path, capsys, on_fake_grid):
    out = tmp_path / "run"
    assert cli.main(["run", *TAB, "--set", "faults.rate=1.0", "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "no training round counted (30 client failures" in captured.err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trained_rounds"] == 0 and summary["skipped_rounds"] == 3
    assert "0 of 3 rounds trained" in captured.out


def test_the_printout_labels_every_figure_with_its_round_and_rule(tmp_path, capsys,
                                                                   on_fake_grid):
    assert cli.main(["run", *TAB, "--out", str(tmp_path / "run")]) == 0
    lines = capsys.readouterr().out.splitlines()
    final = next(line for line in lines if line.strip().startswith("final"))
    assert final.startswith("  final (round 3, the last evaluated): accuracy")
    best = next(line for line in lines if line.strip().startswith("best_test"))
    assert "(round " in best and "highest accuracy" in best


def test_summary_names_each_data_file_read_with_its_sha256(tmp_path, data_dir):
    spec = resolve({"dataset": "compas", "method": "fedavg", "model": "logreg",
                    "partitioner": "iid", "num_clients": 2, "rounds": 1, "nodes": 1,
                    "data_dir": str(data_dir)})
    summary = run_on_grid(FakeGrid(client_app, 1), spec, tmp_path / "run")
    [read] = summary["data_files"]
    path = Path(read["path"])
    assert read["file"] == "compas/compas-scores-two-years.csv"
    assert path == (data_dir / read["file"]).resolve()
    assert read["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_audit_of_a_dataset_without_user_attributes_says_which_have_them(tmp_path, capsys):
    from fedsim.spec import to_toml

    (tmp_path / "config.toml").write_text(to_toml(resolve({"dataset": "filmtrust"})))
    assert cli.main(["audit", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "'filmtrust' has no user attributes" in err and "movielens-100k (gender" in err


def test_keys_of_one_table(capsys):
    assert cli.main(["keys", "fedfact"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| `")]
    assert rows and all(line.startswith("| `fedfact.") for line in rows)
    assert cli.main(["keys", "nope"]) == 2
    assert "no spec table 'nope'" in capsys.readouterr().err


def test_check_validates_a_spec_without_running_it(tmp_path, capsys):
    spec = tmp_path / "spec.toml"
    spec.write_text('rounds = 0\n')
    assert cli.main(["check", str(spec)]) == 2
    assert "rounds = 0" in capsys.readouterr().err
    spec.write_text(f'rounds = 2\nout_dir = "{finished_run(tmp_path / "run")}"\n')
    assert cli.main(["check", str(spec)]) == 2
    assert "is not empty" in capsys.readouterr().err
    spec.write_text('rounds = 2\n')
    assert cli.main(["check", str(spec)]) == 0
    assert capsys.readouterr().out.startswith("ok: fedncf on synthetic-rec, 500 clients")


class _Context:
    def __init__(self, run_config: dict):
        self.run_config = run_config


def test_the_serverapp_fails_a_bad_spec_before_waiting_for_nodes(capsys):
    """Under `flwr run`: one line naming the key, and the run fails (grid never touched)."""
    from fedsim.app import server_app

    with pytest.raises(server_app.RunFailed, match="rounds = 0"):
        server_app.main(None, _Context({"rounds": 0}))
    assert capsys.readouterr().out == ("fedsim: error: rounds = 0: expected an int in "
                                       "[1, 100000]\n")


def test_the_serverapp_fails_a_run_that_trained_nothing(tmp_path):
    from fedsim.app import server_app

    config = {**resolve({"dataset": "synthetic-tabular", "method": "fedavg", "model": "logreg",
                         "partitioner": "iid", "num_clients": 4, "rounds": 2, "nodes": 2,
                         "faults.rate": 1.0}), "out_dir": str(tmp_path / "run")}
    with pytest.raises(server_app.RunFailed, match="no training round counted"):
        server_app.main(FakeGrid(client_app, 2), _Context(config))
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["trained_rounds"] == 0
