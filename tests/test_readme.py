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
