"""One experiment on a Flower grid: the body of every ServerApp fedsim builds.

The same function serves ``fedsim run`` (Python ``run_simulation``), ``flwr run`` (the
ServerApp reads the spec from its run config) and the Flower deployment runtime. It writes the
results as the run goes and a checkpoint after every round; with ``resume`` it continues from
the checkpoint in `out_dir`. A new run never writes into a folder that holds anything
(:func:`prepare_out_dir`): results of two runs are never mixed.
"""

from __future__ import annotations

import shutil
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Mapping

from flwr.serverapp import Grid

from fedsim.data import data_files
from fedsim.federation import load_federation
from fedsim.methods import METHODS
from fedsim.runner.checkpoint import FILE as CHECKPOINT
from fedsim.runner.checkpoint import load_checkpoint, save_checkpoint
from fedsim.runner.results import RunRecorder


def default_out_dir(spec: Mapping[str, Any]) -> Path:
    """runs/<method>-<dataset>-<time>, with a suffix if that folder exists already."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{spec['method']}-{spec['dataset']}-{stamp}"
    candidate, number = base, 1
    while candidate.exists():
        number += 1
        candidate = base.with_name(f"{base.name}-{number}")
    return candidate


class OutDirError(ValueError):
    """The output folder holds something a new run would overwrite or mix with."""


# What a run writes: a folder holding one of these is a fedsim run's, which --overwrite clears.
RUN_FILES = ("config.toml", "metrics.jsonl", "summary.json", CHECKPOINT)


def prepare_out_dir(out_dir: Path, resume: bool = False, overwrite: bool = False) -> None:
    """Make `out_dir` ready for a run: absent or empty for a new run; with `resume`, holding a
    checkpoint (FileNotFoundError otherwise); with `overwrite`, a fedsim run folder's contents
    are deleted first (a folder holding no run's files is never cleared). Anything else:
    OutDirError saying what to do."""
    out_dir = Path(out_dir)
    if resume:
        load_checkpoint(out_dir)
        return
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise OutDirError(f"output folder {out_dir} is a file")
    entries = sorted(out_dir.iterdir())
    if not entries:
        return
    names = ", ".join(e.name for e in entries[:5]) + (", ..." if len(entries) > 5 else "")
    if not overwrite:
        raise OutDirError(f"output folder {out_dir} is not empty ({names}): a new run would "
                          "overwrite and mix with what is there. Use another --out, "
                          f"--resume {out_dir} to continue its run, or --overwrite to delete "
                          "its contents first")
    if not any((out_dir / name).exists() for name in RUN_FILES):
        raise OutDirError(f"--overwrite: {out_dir} holds no fedsim run ({names}; none of "
                          f"{', '.join(RUN_FILES)}), so it is not cleared: use an empty or new "
                          "folder")
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def run_on_grid(grid: Grid, spec: Mapping[str, Any], out_dir: Path,
                on_record: Callable[[dict[str, Any]], None] | None = None,
                resume: bool = False) -> dict[str, Any]:
    """Run the spec's method to round ``rounds`` on `grid`; write results; return the summary."""
    out_dir = Path(out_dir).resolve()
    # Clients derive their private-state store from out_dir: send it as an absolute path.
    spec = {**spec, "out_dir": str(out_dir)}
    method = METHODS[spec["method"]]
    federation = load_federation(spec)
    if not resume:
        prepare_out_dir(out_dir)  # callers that may --overwrite have cleared it already
    checkpoint = load_checkpoint(out_dir) if resume else None
    run_id = checkpoint["run_id"] if checkpoint else uuid.uuid4().hex
    recorder = RunRecorder(out_dir, spec, method.headline, on_record,
                           resume_round=checkpoint["round"] if checkpoint else None,
                           data_files=data_files(spec["dataset"], spec["data_dir"] or None,
                                                      spec["data.path"]))
    strategy = method.build(spec, federation, {"run_id": run_id, "on_round": recorder.on_round})
    strategy.on_checkpoint = lambda server_round, arrays: save_checkpoint(
        out_dir, server_round, run_id, arrays, strategy.state_dict())
    if checkpoint:
        strategy.load_state_dict(checkpoint["strategy"])
        strategy.start(grid, checkpoint["arrays"], num_rounds=spec["rounds"],
                       start_round=checkpoint["round"])
    else:
        strategy.start(grid, method.initial_arrays(spec, federation), num_rounds=spec["rounds"])
    return recorder.finish(federation.num_clients)
