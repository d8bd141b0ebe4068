"""What a run leaves in its output directory, written as the run goes.

- ``config.toml``: the resolved spec (every key, defaults included), written before round 1;
- ``metrics.jsonl``: one JSON object per round (round 0 = the initial model), appended and
  flushed at the end of each round, so a crash loses at most the round in progress;
- ``summary.json``: the stable contract other tools read (see docs/results.md), written at the end;
- ``curves.png``: learning curves of the headline metrics;
- ``tensorboard/``: with the spec's ``tensorboard = true``, every round's numbers as TensorBoard
  scalars (step = round).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from fedsim import __version__
from fedsim.privacy import budget
from fedsim.spec import SpecError, to_toml

SUMMARY_VERSION = 1


class RunRecorder:
    """Receives each round's record, persists it, and writes the summary and plots at the end."""

    def __init__(self, out_dir: Path, spec: Mapping[str, Any], headline: str,
                 on_record: Callable[[dict[str, Any]], None] | None = None,
                 resume_round: int | None = None,
                 data_files: list[dict[str, str]] | None = None):
        """A new run (config.toml written, metrics.jsonl started) or, with `resume_round`, the
        continuation of the run in `out_dir`: its records up to that round are kept, later
        ones (written after its last checkpoint) dropped, and wall time continues.
        `data_files` (path and sha256 of each raw file read) goes to summary.json."""
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.spec = dict(spec)
        self.headline = headline
        self.on_record = on_record
        self.data_files = data_files or []
        self.history: list[dict[str, Any]] = []
        self.started = time.perf_counter()
        metrics = self.out_dir / "metrics.jsonl"
        if resume_round is None:
            (self.out_dir / "config.toml").write_text(to_toml(self.spec))
        else:
            kept = [json.loads(line) for line in metrics.read_text().splitlines() if line]
            self.history = [r for r in kept if r["round"] <= resume_round]
            metrics.write_text("".join(json.dumps(r) + "\n" for r in self.history))
            self.started -= self.history[-1]["wall_seconds"] if self.history else 0.0
        self._metrics = metrics.open("a")
        self._tensorboard = (tensorboard_writer(self.out_dir / "tensorboard", resume_round)
                             if self.spec.get("tensorboard") else None)

    def on_round(self, record: dict[str, Any]) -> None:
        record = {**record, "wall_seconds": time.perf_counter() - self.started}
        self.history.append(record)
        self._metrics.write(json.dumps(_finite(record)) + "\n")
        self._metrics.flush()
        if self._tensorboard is not None:
            for name, value in record.items():
                if (name != "round" and isinstance(value, (int, float))
                        and not isinstance(value, bool) and math.isfinite(value)):
                    self._tensorboard.add_scalar(name, value, global_step=record["round"])
            self._tensorboard.flush()
        if self.on_record is not None:
            self.on_record(record)

    def finish(self, num_clients: int) -> dict[str, Any]:
        self._metrics.close()
        if self._tensorboard is not None:
            self._tensorboard.close()
        summary = build_summary(self.spec, self.history, self.headline, num_clients,
                                wall_seconds=time.perf_counter() - self.started,
                                data_files=self.data_files)
        (self.out_dir / "summary.json").write_text(json.dumps(_finite(summary), indent=2) + "\n")
        plot_curves(self.history, self.headline, self.out_dir / "curves.png")
        return summary


def require_tensorboard() -> type:
    """torch's TensorBoard SummaryWriter class; SpecError when the tensorboard package (which
    the writer imports) is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        raise SpecError(f"tensorboard = true needs the tensorboard package ({err}): pip install "
                        "'fedsim[tensorboard]', or set tensorboard = false") from None
    return SummaryWriter


def tensorboard_writer(path: Path, resume_round: int | None = None) -> Any:
    """A SummaryWriter on `path`; a resumed run first drops the steps after `resume_round`
    (written after its last checkpoint)."""
    return require_tensorboard()(str(path), purge_step=None if resume_round is None
                                 else resume_round + 1)


def build_summary(spec: Mapping[str, Any], history: list[dict[str, Any]], headline: str,
                  num_clients: int, wall_seconds: float,
                  data_files: list[dict[str, str]] | None = None) -> dict[str, Any]:
    evaluated = [r for r in history if headline in r]
    last = history[-1] if history else {}
    final = next((r for r in reversed(history) if headline in r), {})
    trained = [r for r in history if r["round"] >= 1 and not r.get("skipped")]
    return {
        "schema_version": SUMMARY_VERSION,
        "fedsim_version": __version__,
        "method": spec["method"],
        "dataset": spec["dataset"],
        "partitioner": spec["partitioner"],
        "model": spec["model"],
        "num_clients": num_clients,
        "rounds": spec["rounds"],
        "seed": spec["seed"],
        "fraction": spec["fraction"],
        "headline": headline,
        "wall_seconds": wall_seconds,
        "bytes_up": last.get("bytes_up", 0),
        "bytes_down": last.get("bytes_down", 0),
        "bytes_eval_up": last.get("bytes_eval_up", 0),
        "bytes_eval_down": last.get("bytes_eval_down", 0),
        # What the simulation moved (a node's sum once, shared arrays once per message).
        **{f"physical_bytes_{k}": last.get(f"physical_bytes_{k}", 0)
           for k in ("up", "down", "eval_up", "eval_down")},
        "failures": sum(r.get("failures", 0) for r in history),
        "rejected": sum(r.get("rejected", 0) for r in history),
        # Training rounds that changed the model; 0 = the run trained nothing (its "final" is
        # the initial model), which `fedsim run` reports as an error.
        "trained_rounds": len(trained),
        "skipped_rounds": sum(1 for r in history if r.get("skipped")),
        "privacy": budget(spec, last.get("privacy_releases", 0)),
        "data_files": list(data_files or []),
        "final": _metrics_only(final),
        "final_round": final.get("round"),
        # Classification: each gap of the final round beside the gap an exactly fair classifier
        # would measure on the same test rows (fedsim/metrics/fairness.py noise_floors).
        "noise_floor": _noise_floor(final),
        "best_test": (_best_meeting_constraints(evaluated, headline, spec)
                      if spec["method"] in FAIRNESS_METHODS else _best(evaluated, headline)),
        "last10_test": _mean_of_last(evaluated, LAST_ROUNDS),
        "best_val": _best([r for r in evaluated if f"val_{headline}" in r], f"val_{headline}"),
        # The PFedRec authors' rule (train.py: `val_hit_ratio >= best_val_hr`).
        "best_val_later": _best([r for r in evaluated if f"val_{headline}" in r],
                                f"val_{headline}", later_on_ties=True),
        # Full ranking may be computed at fewer rounds (eval_full_every): the clean protocol
        # selects among those, on the validation item's full-ranking metric.
        "best_val_full": _best([r for r in evaluated if f"val_{headline}_full" in r],
                               f"val_{headline}_full"),
        "spec": dict(spec),
    }


def untrained(summary: Mapping[str, Any]) -> str:
    """Why a run whose summary has no trained round is an error."""
    return (f"no training round counted ({summary['failures']} client failures, "
            f"{summary['rejected']} rejected replies, {summary['skipped_rounds']} of "
            f"{summary['rounds']} rounds below min_replies or without a valid reply): its "
            "results are the initial model's; the warnings and metrics.jsonl say per round")


_BOOKKEEPING = {"round", "failures", "rejected", "skipped", "bytes_up", "bytes_down",
                "physical_bytes_up", "physical_bytes_down", "physical_bytes_eval_up",
                "physical_bytes_eval_down", "train_seconds", "eval_seconds",
                "bytes_eval_up", "bytes_eval_down", "ray_nodes", "round_seconds", "wall_seconds",
                "privacy_releases"}


def _metrics_only(record: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in _BOOKKEEPING}


# The mean over the last evaluated rounds, beside the best-on-test round: where a curve is flat,
# the metric at the first best-HR round swings between seeds (NDCG on FilmTrust).
LAST_ROUNDS = 10


def _mean_of_last(records: list[dict[str, Any]], count: int) -> dict[str, Any] | None:
    """Every metric averaged over the last `count` evaluated rounds after round 0 (metrics
    that some of those rounds lack, e.g. full ranking at eval_full_every, over the rounds that
    have them)."""
    last = [r for r in records if r["round"] > 0][-count:]
    if not last:
        return None
    names = {name for r in last for name, v in _metrics_only(r).items()
             if isinstance(v, (int, float)) and not isinstance(v, bool)}
    means = {}
    for name in sorted(names):
        values = [r[name] for r in last if name in r and not math.isnan(r[name])]
        means[name] = sum(values) / len(values) if values else float("nan")
    return {"rounds": [last[0]["round"], last[-1]["round"]],
            "selected_on": f"mean over the last {len(last)} evaluated rounds", "metrics": means}


def _noise_floor(record: Mapping[str, Any]) -> dict[str, dict[str, float]] | None:
    """{gap: {"value", "floor"}} for every "<gap>_floor" metric of `record`; None if it has none."""
    floors = {k[:-len("_floor")]: v for k, v in record.items() if k.endswith("_floor")}
    return {gap: {"value": record.get(gap), "floor": floor}
            for gap, floor in floors.items()} or None


def _best(records: list[dict[str, Any]], key: str, rule: str = "",
          later_on_ties: bool = False) -> dict[str, Any] | None:
    """Round with the highest `key` after round 0 (the first such round on ties, the last with
    `later_on_ties`)."""
    candidates = [r for r in records if r["round"] > 0 and not math.isnan(r[key])]
    if not candidates:
        return None
    best = max(reversed(candidates) if later_on_ties else candidates, key=lambda r: r[key])
    tie = ", the later round on ties" if later_on_ties else ""
    return {"round": best["round"], "selected_on": key,
            "rule": rule or f"highest {key} of the rounds after round 0{tie}",
            "metrics": _metrics_only(best)}


# Fairness methods: a round is selected for what the method is for, not for accuracy alone.
FAIRNESS_METHODS = ("fedfact_post", "fedfact_in", "fairfed", "fedfb")


def fairness_constraints(spec: Mapping[str, Any]) -> dict[str, float]:
    """{gap metric: bound} of the constraints a fairness method promises: FedFACT's, in the
    group-vs-population form it constrains (global: xi_global, local: xi_local at every client,
    so the worst client's gap), for its variant; {} for a method with no stated bound (FairFed,
    FedFB)."""
    if spec["method"] not in ("fedfact_post", "fedfact_in"):
        return {}
    gap = f"{spec['fedfact.criterion']}_pop"
    variant = spec["fedfact.variant"]
    return {**({f"{gap}_global": spec["fedfact.xi_global"]} if "g" in variant else {}),
            **({f"{gap}_local_max": spec["fedfact.xi_local"]} if "l" in variant else {})}


def _best_meeting_constraints(records: list[dict[str, Any]], headline: str,
                              spec: Mapping[str, Any]) -> dict[str, Any] | None:
    """A fairness run's best_test: the highest `headline` among the rounds of the method's
    fair model (FedFACT post: after its FedAvg pretraining) whose test gaps meet its
    constraints, each bound widened by the gap's noise floor where the round reports one
    ("<gap>_floor": what an exactly fair classifier measures on these test rows); the final
    round when no round meets them or the method states no bound."""
    first = spec["fedfact.pretrain_rounds"] + 1 if spec["method"] == "fedfact_post" else 1
    constraints = fairness_constraints(spec)
    final = next((r for r in reversed(records) if r["round"] >= first), None)
    if final is None:
        return None
    stage = f"rounds >= {first}" if first > 1 else "rounds after round 0"
    if not constraints:
        return {"round": final["round"], "selected_on": "final",
                "rule": f"final round ({spec['method']} states no fairness bound to select on)",
                "metrics": _metrics_only(final)}
    bounds = ", ".join(f"{gap} <= {bound:g} + {gap}_floor" for gap, bound in constraints.items())
    meeting = [r for r in records if r["round"] >= first and all(
        gap in r and r[gap] <= bound + r.get(f"{gap}_floor", 0.0)
        for gap, bound in constraints.items())]
    if not meeting:
        return {"round": final["round"], "selected_on": "final",
                "rule": f"final round: none of the {stage} met {bounds}",
                "metrics": _metrics_only(final)}
    return _best(meeting, headline, f"highest {headline} of the {stage} meeting {bounds}")


def _finite(value: Any) -> Any:
    """NaN/inf -> None, so the JSON files are valid for any reader."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


def curve_keys(headline: str, history: list[dict[str, Any]]) -> list[str]:
    """Curves worth plotting: the headline family on test and validation, fairness gaps, loss."""
    wanted = [headline, f"val_{headline}", headline.replace("hr", "ndcg"), f"{headline}_full",
              f"{headline}_tail", "dp_global", "dp_local_max", "train_loss"]
    present = set().union(*history) if history else set()
    return [k for k in dict.fromkeys(wanted) if k in present]  # each once ("accuracy")


def plot_curves(history: list[dict[str, Any]], headline: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = curve_keys(headline, history)
    if not keys:
        return
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 2.8), squeeze=False)
    for ax, key in zip(axes[0], keys):
        points = [(r["round"], r[key]) for r in history if key in r and r[key] is not None]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker=".")
        ax.set_title(key)
        ax.set_xlabel("round")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
