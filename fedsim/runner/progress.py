"""Progress of a running experiment: a live bar on a terminal, one line per round otherwise."""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

SHOWN = ("hr@10", "ndcg@10", "hr@10_full", "ndcg@10_full", "val_hr@10", "accuracy", "dp_global",
         "dp_local_max", "train_loss", "privacy_epsilon")


def describe(record: dict[str, Any]) -> str:
    return "  ".join(f"{k} {record[k]:.4f}" for k in SHOWN
                     if isinstance(record.get(k), float))


class RoundProgress:
    """Context manager; call it with each round record."""

    def __init__(self, rounds: int, title: str):
        self.rounds = rounds
        self.title = title
        self.live = sys.stdout.isatty()
        self.started = time.perf_counter()
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                 TextColumn("round {task.completed}/{task.total}"),
                                 TimeElapsedColumn(), TextColumn("{task.fields[metrics]}"),
                                 console=Console(), transient=False)
        self.task = None

    def __enter__(self) -> "RoundProgress":
        if self.live:
            self.progress.start()
            self.task = self.progress.add_task(self.title, total=self.rounds, metrics="starting")
        else:
            print(f"{self.title}: {self.rounds} rounds", flush=True)
        return self

    def __call__(self, record: dict[str, Any]) -> None:
        if self.live:
            self.progress.update(self.task, completed=record["round"], metrics=describe(record))
        else:
            elapsed = time.perf_counter() - self.started
            print(f"round {record['round']}/{self.rounds} [{elapsed:6.1f}s] {describe(record)}",
                  flush=True)

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self.progress.stop()
