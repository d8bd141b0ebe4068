"""The ``fedsim`` command.

    fedsim run [SPEC.toml] [--out DIR [--overwrite]] [--data-dir DIR] [--set key=value ...]
    fedsim run --resume DIR
    fedsim check SPEC.toml [--set key=value ...]
    fedsim keys [TABLE]
    fedsim audit RUN_DIR [--attribute NAME ...] [--seeds N]

Without SPEC it runs the embedded default (FedNCF on the synthetic recommendation set). A run
never writes into a folder that holds something (--resume continues the run there, --overwrite
deletes a previous run's files first); a run's own config.toml as SPEC repeats that run in a
fresh folder. Exit status: 0 done, 1 the run trained nothing (every training round failed), 2
bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fedsim import spec as specs
from fedsim.runner.progress import describe
from fedsim.runner.results import untrained


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedsim", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run an experiment spec as a Flower simulation on Ray")
    run.add_argument("spec", nargs="?", help="experiment spec (TOML); omit for the default run")
    run.add_argument("--out", help="output directory, absent or empty (default: "
                     "runs/<method>-<dataset>-<time>)")
    run.add_argument("--overwrite", action="store_true", help="delete the previous run's files "
                     "in the output directory first")
    run.add_argument("--data-dir", help="directory holding the dataset folders, the only place "
                     "looked at (default: FEDSIM_DATA_DIR, then ~/.cache/fedsim)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a spec key, e.g. --set fedncf.server_lr=0.01 (repeatable)")
    run.add_argument("--ray-address", help="attach to an existing Ray cluster (also RAY_ADDRESS)")
    run.add_argument("--resume", metavar="DIR", help="continue the run whose results are in DIR "
                     "from its last checkpoint (its config.toml is the spec)")
    check = commands.add_parser("check", help="check a spec as `fedsim run` and the ServerApp "
                                "of `flwr run` would (keys, data files, output folder) and run "
                                "nothing; exit 0 when it would start")
    check.add_argument("spec", help="experiment spec (TOML)")
    check.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    keys = commands.add_parser("keys", help="print the reference of every spec key (Markdown)")
    keys.add_argument("table", nargs="?", help="only this table's keys, e.g. fedfact")
    audit = commands.add_parser("audit", help="attribute-inference attack on a finished "
                                "recommendation run's user embeddings; writes RUN_DIR/audit.json")
    audit.add_argument("run_dir", help="a run's output folder (config.toml, checkpoint.pt)")
    audit.add_argument("--attribute", action="append", default=[], metavar="NAME",
                       help="user attribute to attack (repeatable; default: every one the "
                       "dataset has)")
    audit.add_argument("--seeds", type=int, default=5, help="attacker splits averaged (default 5)")
    return parser


def resolve_run_spec(args: argparse.Namespace) -> dict:
    if args.resume:
        if args.spec or args.set or args.out or args.overwrite:
            raise specs.SpecError("--resume DIR continues the run as it was specified: give no "
                                  "SPEC, --set, --out or --overwrite with it")
        return specs.resolve({**specs.load_file(f"{args.resume}/config.toml"),
                              "out_dir": str(args.resume)})
    overrides = specs.load_file(args.spec) if args.spec else {}
    if args.spec and is_run_config(args.spec, overrides):
        # "fedsim run RUN/config.toml" repeats that run: in a fresh folder, never in RUN.
        print(f"fedsim: {args.spec} is a finished run's config: repeating it in a new folder",
              file=sys.stderr)
        overrides.pop("out_dir")
    overrides.update(specs.parse_set(args.set))
    if args.data_dir:
        overrides["data_dir"] = args.data_dir
    if args.out:
        overrides["out_dir"] = args.out
    if args.ray_address:
        overrides["ray.address"] = args.ray_address
    return specs.resolve(overrides)


def is_run_config(path: str, overrides: dict) -> bool:
    """Whether spec file `path` is the config.toml a run wrote into its own output folder."""
    folder = Path(path).resolve().parent
    pinned = overrides.get("out_dir")
    return Path(path).name == "config.toml" and bool(pinned) and (
        Path(pinned).resolve() == folder or (folder / "metrics.jsonl").exists())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "keys":
        try:
            print(specs.markdown_reference(args.table), end="")
        except specs.SpecError as err:
            print(f"fedsim: error: {err}", file=sys.stderr)
            return 2
        return 0
    if args.command == "audit":
        return _audit(args)
    if args.command == "check":
        return _check(args)
    from fedsim.data import DataError
    from fedsim.runner.checkpoint import load_checkpoint
    from fedsim.runner.progress import RoundProgress
    from fedsim.runner.simulation import simulate

    try:
        spec = resolve_run_spec(args)
        if args.resume:
            done = load_checkpoint(args.resume)["round"]
            print(f"fedsim: resuming {args.resume} from round {done} (of {spec['rounds']})",
                  flush=True)
        title = f"{spec['method']} on {spec['dataset']}"
        with RoundProgress(spec["rounds"], title) as progress:
            summary, out = simulate(spec, on_record=progress, resume=bool(args.resume),
                                    overwrite=args.overwrite)
    except (specs.SpecError, DataError, ValueError, FileNotFoundError) as err:
        print(f"fedsim: error: {err}", file=sys.stderr)
        return 2
    print(report(summary, out))
    if summary["trained_rounds"] == 0:
        print(f"fedsim: error: {untrained(summary)}; results in {out}", file=sys.stderr)
        return 1
    return 0


def report(summary: dict, out: Path) -> str:
    """The printed summary: each figure with its round and the rule that chose it (the final
    round first: the one no rule picked), then failures, privacy and where the files are."""
    lines = [f"{summary['method']} on {summary['dataset']}: {summary['num_clients']} clients, "
             f"{summary['trained_rounds']} of {summary['rounds']} rounds trained, "
             f"{summary['wall_seconds']:.1f} s"]
    if summary["final_round"] is not None:
        lines.append(f"  final (round {summary['final_round']}, the last evaluated): "
                     f"{describe(summary['final'])}")
    # best_val_later (the PFedRec authors' tie rule) only where it picks another round.
    later, first = summary.get("best_val_later"), summary["best_val"]
    shown = ("best_val_full", "best_val",
             *(("best_val_later",) if later and later["round"] != first["round"] else ()),
             "best_test")
    for name in shown:
        if chosen := summary[name]:
            lines.append(f"  {name} (round {chosen['round']}, {chosen['rule']}): "
                         f"{describe(chosen['metrics'])}")
    if summary["failures"] or summary["rejected"] or summary["skipped_rounds"]:
        lines.append(f"  failures: {summary['failures']} client failures, {summary['rejected']} "
                     f"rejected replies, {summary['skipped_rounds']} rounds that did not count "
                     "(per round: metrics.jsonl)")
    if privacy := summary["privacy"]:
        lines.append(f"  privacy: epsilon {privacy['epsilon']:.4g} at delta {privacy['delta']:g} "
                     f"after {privacy['releases']} training rounds of the most-asked client "
                     f"(replacement: {privacy['epsilon_replace']:.4g})")
    lines.append(f"results: {out} (summary.json, metrics.jsonl, curves.png)")
    return "\n".join(lines)


def _check(args: argparse.Namespace) -> int:
    from fedsim.data import DataError
    from fedsim.federation import load_federation
    from fedsim.runner.experiment import prepare_out_dir

    try:
        spec = specs.resolve({**specs.load_file(args.spec), **specs.parse_set(args.set)})
        federation = load_federation(spec)
        if spec["out_dir"]:
            prepare_out_dir(Path(spec["out_dir"]))
    except (specs.SpecError, DataError, ValueError, FileNotFoundError) as err:
        print(f"fedsim: error: {err}", file=sys.stderr)
        return 2
    print(f"ok: {spec['method']} on {spec['dataset']}, {federation.num_clients} clients, "
          f"{spec['rounds']} rounds; results in {spec['out_dir'] or 'a new folder under runs/'}")
    return 0


def _audit(args: argparse.Namespace) -> int:
    from fedsim.audit import FILE, audit_run
    from fedsim.data import DataError

    try:
        report = audit_run(args.run_dir, args.attribute or None, seeds=args.seeds)
    except (specs.SpecError, DataError, ValueError, FileNotFoundError,
            NotImplementedError) as err:  # the last: a trainer without user embeddings
        print(f"fedsim: error: {err}", file=sys.stderr)
        return 2
    print(f"{report['method']} on {report['dataset']}: {report['users']} users' embeddings "
          f"({report['from']}, round {report['round']})")
    for name, scores in report["attributes"].items():
        print(f"  {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()
                                        if k != "class_counts"))
    print(f"written: {args.run_dir}/{FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
