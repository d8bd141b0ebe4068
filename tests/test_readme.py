"""The README's set-up commands stay true: CI runs the test command verbatim."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    command = ci[ci.index("# README test command:") + 1]
    assert command.endswith("pytest -q")
    assert command in (ROOT / "README.md").read_text()


def test_readme_main_command_installs_and_runs_the_default():
    readme = (ROOT / "README.md").read_text()
    assert "pip install -q -e . && fedsim run\n" in readme


def test_readme_audit_example_audits_a_run_of_a_dataset_with_user_attributes():
    import shlex

    from fedsim.audit import ATTRIBUTE_DATASETS
    from fedsim.spec import load_file, parse_set, resolve

    lines = (ROOT / "README.md").read_text().splitlines()
    audited = next(shlex.split(line, comments=True)[2] for line in lines
                   if line.startswith("fedsim audit "))
    run = shlex.split(next(line for line in lines
                           if line.startswith("fedsim run ") and f"--out {audited}" in line),
                      comments=True)
    sets = [run[i + 1] for i, word in enumerate(run) if word == "--set"]
    spec = resolve({**load_file(ROOT / run[2]), **parse_set(sets)})
    assert spec["dataset"] in ATTRIBUTE_DATASETS
