"""Optional experiment tracking: the per-round metrics as TensorBoard scalars (`tensorboard`)."""

from __future__ import annotations

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fedsim.runner.results import RunRecorder
from fedsim.spec import resolve

HISTORY = [{"round": r, "hr@10": 0.1 * r, "train_loss": 1.0 - 0.1 * r, "failures": r % 2,
            "skipped": 0} for r in range(4)]


def scalars(folder) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, round(e.value, 6)) for e in events.Scalars(tag)]
            for tag in events.Tags()["scalars"]}


def test_tensorboard_gets_every_rounds_numbers_and_is_off_by_default(tmp_path):
    recorder = RunRecorder(tmp_path / "on", resolve({"tensorboard": True}), "hr@10")
    for record in HISTORY:
        recorder.on_round(record)
    recorder.finish(num_clients=7)
    written = scalars(tmp_path / "on" / "tensorboard")
    assert written["hr@10"] == [(r, round(0.1 * r, 6)) for r in range(4)]
    assert written["failures"] == [(0, 0.0), (1, 1.0), (2, 0.0), (3, 1.0)]
    assert "wall_seconds" in written and "round" not in written

    recorder = RunRecorder(tmp_path / "off", resolve({}), "hr@10")
    recorder.on_round(HISTORY[0])
    recorder.finish(num_clients=7)
    assert not (tmp_path / "off" / "tensorboard").exists()


def test_a_resumed_run_replaces_the_steps_after_its_checkpoint(tmp_path):
    spec = resolve({"tensorboard": True})
    recorder = RunRecorder(tmp_path, spec, "hr@10")
    for record in HISTORY:  # rounds 0-3 written; say the checkpoint is at round 2
        recorder.on_round(record)
    recorder.finish(num_clients=7)
    resumed = RunRecorder(tmp_path, spec, "hr@10", resume_round=2)
    resumed.on_round({**HISTORY[3], "hr@10": 0.9})
    resumed.finish(num_clients=7)
    assert scalars(tmp_path / "tensorboard")["hr@10"] == [(0, 0.0), (1, 0.1), (2, 0.2), (3, 0.9)]
