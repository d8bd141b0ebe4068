"""Progress of a running experiment: a live bar on a terminal, one line per round otherwise.

The live display is two lines: title, bar, round and elapsed time (36 columns plus the title,
cut at 24), then the latest metrics, cut with an ellipsis at the terminal's width: a long metrics
line never squeezes the bar or the time out, from 80 columns up. What other code prints
meanwhile (Flower's log lines, Ray's worker output, warnings) goes above the bar, not into it:
rich redirects ``sys.stdout``/``sys.stderr``, and Flower's log handler, which holds the stream
it was created with, is pointed at the redirected stream while the bar is shown.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Column
from rich.text import Text

SHOWN = ("hr@10", "ndcg@10", "hr@10_full", "ndcg@10_full", "val_hr@10", "accuracy", "dp_global",
         "dp_local_max", "train_loss", "privacy_epsilon")
TITLE_WIDTH = 24  # longer titles are cut: the bar and the time must fit 80 columns


def describe(record: dict[str, Any]) -> str:
    return "  ".join(f"{k} {record[k]:.4f}" for k in SHOWN
                     if isinstance(record.get(k), float))


def round_note(record: dict[str, Any]) -> str:
    """Failures of the round, for the progress line ("" when there were none)."""
    parts = [f"{record[k]} {k}" for k in ("failures", "rejected") if record.get(k)]
    if record.get("skipped"):
        parts.append("not counted")
    return f"[{', '.join(parts)}] " if parts else ""


class _TwoLineProgress(Progress):
    """Each task's bar line, then its "metrics" field on a line of its own."""

    def get_renderables(self) -> Any:
        yield self.make_tasks_table(self.tasks)
        for task in self.tasks:
            yield Text("  " + task.fields.get("metrics", ""), no_wrap=True, overflow="ellipsis")


def make_progress(console: Console) -> Progress:
    return _TwoLineProgress(
        TextColumn("{task.description}", table_column=Column(
            no_wrap=True, overflow="ellipsis", max_width=TITLE_WIDTH)),
        BarColumn(bar_width=16),
        TextColumn("round {task.completed}/{task.total}", table_column=Column(no_wrap=True)),
        TimeElapsedColumn(), console=console, transient=False)


class RoundProgress:
    """Context manager; call it with each round record."""

    def __init__(self, rounds: int, title: str, console: Console | None = None):
        self.rounds = rounds
        self.title = title
        self.console = console or Console()
        self.live = self.console.is_terminal
        self.started = time.perf_counter()
        self.progress = make_progress(self.console)
        self.task = None
        self._streams: list[tuple[logging.StreamHandler, Any]] = []

    def __enter__(self) -> "RoundProgress":
        if self.live:
            self.progress.start()
            self.task = self.progress.add_task(self.title, total=self.rounds, metrics="starting")
            # Flower's handler writes to the stderr it was created with, past rich's redirect.
            for handler in logging.getLogger("flwr").handlers:
                if (isinstance(handler, logging.StreamHandler) and sys.stderr is not
                        handler.stream in (sys.__stderr__, sys.__stdout__)):
                    self._streams.append((handler, handler.setStream(sys.stderr)))
        else:
            print(f"{self.title}: {self.rounds} rounds", flush=True)
        return self

    def __call__(self, record: dict[str, Any]) -> None:
        text = round_note(record) + describe(record)
        if self.live:
            self.progress.update(self.task, completed=record["round"], metrics=text)
        else:
            elapsed = time.perf_counter() - self.started
            print(f"round {record['round']}/{self.rounds} [{elapsed:6.1f}s] {text}", flush=True)

    def __exit__(self, *exc: object) -> None:
        if self.live:
            for handler, stream in reversed(self._streams):
                handler.setStream(stream)
            self._streams = []
            self.progress.stop()
