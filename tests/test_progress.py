"""The live progress display: readable from 80 columns up, other output kept out of it."""

from __future__ import annotations

import io
import logging
import sys

import pytest
from rich.console import Console

from fedsim.runner.progress import RoundProgress, make_progress, round_note, describe

# Every metric the display shows, and failures: longer than a 140-column line.
RECORD = {"round": 3, "hr@10": 0.5, "ndcg@10": 0.3, "hr@10_full": 0.1, "ndcg@10_full": 0.05,
          "val_hr@10": 0.4, "train_loss": 0.69, "privacy_epsilon": 2.5, "failures": 4}


@pytest.mark.parametrize("width", [80, 100, 140, 200])
def test_the_bar_round_and_elapsed_time_stay_whole_at_any_width(width):
    console = Console(file=io.StringIO(), width=width, color_system=None)
    progress = make_progress(console)
    task = progress.add_task("fedrecgel on amazon-video", total=20,
                             metrics=round_note(RECORD) + describe(RECORD))
    progress.update(task, completed=3)
    console.print(progress.get_renderable())
    bar, metrics = console.file.getvalue().splitlines()
    assert "━" in bar and "round 3/20" in bar and "0:00:0" in bar
    assert metrics.startswith("  [4 failures] hr@10 0.5000") and len(metrics) <= width


def test_flower_log_lines_go_above_the_live_display_not_into_it():
    flower = logging.getLogger("flwr")
    handler = logging.StreamHandler(sys.__stderr__)  # as Flower's: bound at import
    flower.addHandler(handler)
    console = Console(file=io.StringIO(), width=100, force_terminal=True, color_system=None)
    try:
        with RoundProgress(3, "fedncf on synthetic-rec", console=console) as progress:
            assert handler.stream is not sys.__stderr__
            flower.warning("round 1: 2 clients failed")
            progress(RECORD)
        assert handler.stream is sys.__stderr__
    finally:
        flower.removeHandler(handler)
    assert "round 1: 2 clients failed" in console.file.getvalue()
