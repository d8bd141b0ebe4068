"""End to end: fedsim against the plain sequential loop of the same math and the same evaluation.

    FEDSIM_DATA_DIR=../shared/data python benchmarks/e2e_bench.py SPEC.toml [--rounds R]
        [--set key=value ...] [--skip-loop] [--skip-framework]

Both ways run the spec's first R rounds (FedRecGEL or FedNCF on NeuMF) and evaluate as the
spec says: every user at round 0, every ``eval_every`` rounds and at the last, sampled ranking
each time and full ranking every ``eval_full_every`` rounds and at the last.

- plain loop (:func:`cohort_bench.plain_loop`): one process, one torch thread, no Flower, no
  Ray; every user's state in memory; evaluation with the same scorers as the clients;
- fedsim: the real Ray simulation (``fedsim.runner.simulation.simulate``), timed from the
  call (Ray's start-up included) to the summary.

Printed: wall time of each and their ratio; per phase (start-up, round 0, training rounds,
sampled evaluations, the last round) the median seconds; the FLOPs of one training round, one
sampled evaluation and one full ranking and how far each phase is from them at
``--gflops`` (torch's dense fp32 rate on one thread; 200 on the project's machine); the best
round's HR@10 of each way; peak resident memory of each way's process tree.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from cohort_bench import plain_loop
from fedrec_bench import PeakMemory
from fedsim.federation import load_federation
from fedsim.methods import METHODS
from fedsim.models import backbone
from fedsim.runner.simulation import simulate
from fedsim.spec import load_file, parse_set, resolve


def neumf_pair_flops(spec: dict) -> tuple[float, float]:
    """(FLOPs of one NeuMF forward pair in training, FLOPs of one scored pair in evaluation,
    where the first tower layer is split into its user and item halves, :meth:`NeuMF.score_all`)."""
    factor, layers = spec["neumf.factor_dim"], spec["neumf.mlp_layers"]
    width = 2 * factor * 2 ** (layers - 1)  # [user MLP ; item MLP]
    tower = [(width >> k, width >> (k + 1)) for k in range(layers)]
    head = 2 * (factor + tower[-1][1])
    forward = sum(2 * a * b for a, b in tower) + head + factor
    evaluation = sum(2 * a * b for a, b in tower[1:]) + head + tower[0][1] + factor
    return forward, evaluation


def flops(spec: dict) -> dict[str, float]:
    """FLOPs of round 1's training (forward + backward = 3 forwards per sample and pass; a
    pass per nonzero SAM radius beside the base pass) and of one evaluation of every user."""
    federation = load_federation(spec)
    forward, scored = neumf_pair_flops(spec)
    strategy = METHODS[spec["method"]].build(spec, federation, {"run_id": "flops"})
    client_cls = METHODS[spec["method"]].client_class()
    samples = sum(len(client_cls(spec, p).round_sample(1)[2]) for p in strategy.sample(1))
    passes = 1 + sum(spec.get(f"fedrecgel.{k}", 0) > 0 for k in ("rho_sh", "rho_ns")
                     if spec["method"] == "fedrecgel")
    users = sum(len(part) for part in federation.train_parts)
    data = federation.dataset
    held_out = 1 + (data.val_items is not None)
    return {"train": 3 * forward * passes * samples,
            "sampled": scored * users * held_out * (1 + spec["data.test_negatives"]),
            "full": scored * users * data.num_items}


def framework(spec: dict) -> tuple[float, list[dict], dict, int]:
    """(wall seconds from the call to the summary, round records, summary, peak bytes)."""
    started = time.perf_counter()
    with PeakMemory() as memory:
        summary, out = simulate(spec)
    wall = time.perf_counter() - started
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return wall, records, summary, memory.peak


def phases(records: list[dict], wall: float, rounds: int) -> dict[str, float]:
    """Median seconds per phase of a run's round records (framework or loop)."""
    middle = [r for r in records if 0 < r["round"] < rounds]
    pick = lambda key, rs: statistics.median(r[key] for r in rs) if rs and key in rs[0] else None
    out = {"round 0 (evaluation, full ranking)": records[0].get("eval_seconds",
                                                                records[0].get("round_seconds")),
           "training round": pick("train_seconds", middle),
           "sampled evaluation": pick("eval_seconds", middle),
           "middle round, both": (statistics.median(r.get("round_seconds", r.get(
               "train_seconds", 0) + r.get("eval_seconds", 0)) for r in middle)
               if middle else None),
           "last round (training + full ranking)": records[-1].get("round_seconds", records[-1].get(
               "train_seconds", 0) + records[-1].get("eval_seconds", 0))}
    rounds_total = sum(r.get("round_seconds", r.get("train_seconds", 0) + r.get("eval_seconds", 0))
                       for r in records)
    out["start-up and the rest"] = wall - rounds_total
    return out


def project(phase: dict[str, float], rounds: int, full_every: int) -> float:
    """Seconds of a `rounds`-round run from the measured phases: start-up, round 0, middle
    rounds, and the last round's time for every round that computes full ranking."""
    full = sum(1 for r in range(1, rounds) if r % full_every == 0) + 1
    return (phase["start-up and the rest"] + phase["round 0 (evaluation, full ranking)"]
            + (rounds - full) * phase["middle round, both"]
            + full * phase["last round (training + full ranking)"])


def best(records: list[dict], key: str = "hr@10") -> tuple[int, float]:
    scored = [r for r in records if r["round"] > 0 and key in r]
    top = max(scored, key=lambda r: r[key])
    return top["round"], top[key]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("spec")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--gflops", type=float, default=200.0,
                        help="dense fp32 GFLOP/s of one torch thread on this machine")
    parser.add_argument("--skip-loop", action="store_true")
    parser.add_argument("--skip-framework", action="store_true")
    args = parser.parse_args()
    spec = resolve({**load_file(args.spec), **parse_set(args.set)})
    full_run, spec = spec["rounds"], {**spec, "rounds": args.rounds}
    print(f"{args.spec}: {spec['method']} on {spec['dataset']}, {args.rounds} rounds, fraction "
          f"{spec['fraction']}, eval_every {spec['eval_every']}, eval_full_every "
          f"{spec['eval_full_every']}, nodes {spec['nodes']}", flush=True)
    work = flops(spec)
    print("FLOPs: training round %.1f G, sampled evaluation %.1f G, full ranking of every pair "
          "%.0f G; at %g "
          "GFLOP/s: %.2f s, %.2f s, %.1f s" % (
              work["train"] / 1e9, work["sampled"] / 1e9, work["full"] / 1e9, args.gflops,
              *(work[k] / args.gflops / 1e9 for k in ("train", "sampled", "full"))), flush=True)
    ways = {}
    if not args.skip_loop:
        history: list[dict] = []
        started = time.perf_counter()
        with PeakMemory() as memory:
            plain_loop(spec, history)
        ways["plain loop"] = (time.perf_counter() - started, history, memory.peak)
        print(f"  plain loop done: {ways['plain loop'][0]:.1f} s", flush=True)
    if not args.skip_framework:
        wall, records, _, peak = framework(spec)
        ways["fedsim"] = (wall, records, peak)
        print(f"  fedsim done: {wall:.1f} s", flush=True)
    names = list(ways)
    print(f"\n{'':40s}" + "".join(f"{n:>14s}" for n in names))
    print(f"{'wall seconds':40s}" + "".join(f"{ways[n][0]:14.1f}" for n in names))
    table = {n: phases(ways[n][1], ways[n][0], args.rounds) for n in names}
    floor = {"training round": work["train"], "sampled evaluation": work["sampled"],
             "round 0 (evaluation, full ranking)": work["full"] + work["sampled"]}
    # Full ranking in blocks (fedsim.metrics.leave_one_out.capped_full_ranks) scores a share of
    # the pairs that depends on the model: the FLOPs of every pair are an upper bound.
    notes = {"round 0 (evaluation, full ranking)": " if every pair were scored"}
    for phase in table[names[0]]:
        cells = "".join(f"{table[n][phase]:14.2f}" if table[n][phase] is not None
                        else f"{'-':>14s}" for n in names)
        seconds = floor[phase] / args.gflops / 1e9 if phase in floor else None
        ideal = (f"   (FLOP time {seconds:.2f} s{notes.get(phase, '')})"
                 if seconds is not None else "")
        print(f"{phase:40s}{cells}{ideal}")
    print(f"{'best round, hr@10 (sampled, test)':40s}" + "".join(
        f"{'%d: %.4f' % best(ways[n][1]):>14s}" for n in names))
    print(f"{'peak memory, process tree (GiB)':40s}" + "".join(
        f"{ways[n][2] / 2**30:14.2f}" for n in names))
    projected = {n: project(table[n], full_run, spec["eval_full_every"]) for n in names}
    print(f"{'projected %d rounds (s)' % full_run:40s}" + "".join(
        f"{projected[n]:14.1f}" for n in names))
    if len(names) == 2:
        loop, fed = ways["plain loop"], ways["fedsim"]
        ratio = lambda phase: table["plain loop"][phase] / table["fedsim"][phase] if (
            table["fedsim"][phase] and table["plain loop"][phase]) else float("nan")
        print(f"\nplain loop / fedsim: end to end {loop[0] / fed[0]:.2f}x, training round "
              f"{ratio('training round'):.2f}x, sampled evaluation "
              f"{ratio('sampled evaluation'):.2f}x, middle round {ratio('middle round, both'):.2f}x;"
              f" best hr@10 differs by {abs(best(loop[1])[1] - best(fed[1])[1]) * 100:.2f} points;"
              f" projected {full_run} rounds {projected['plain loop'] / projected['fedsim']:.2f}x")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
