"""The ``fedsim`` command.

    fedsim run [SPEC.toml] [--out DIR] [--data-dir DIR] [--set key=value ...]
    fedsim run --resume DIR
    fedsim audit RUN_DIR [--attribute NAME ...] [--seeds N]

Without SPEC it runs the embedded default (FedNCF on the synthetic recommendation set).
"""

from __future__ import annotations

import argparse
import sys

from fedsim import spec as specs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedsim", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run an experiment spec as a Flower simulation on Ray")
    run.add_argument("spec", nargs="?", help="experiment spec (TOML); omit for the default run")
    run.add_argument("--out", help="output directory (default: runs/<method>-<dataset>-<time>)")
    run.add_argument("--data-dir", help="directory holding the dataset folders "
                     "(default: FEDSIM_DATA_DIR, then ~/.cache/fedsim)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a spec key, e.g. --set fedncf.server_lr=0.01 (repeatable)")
    run.add_argument("--ray-address", help="attach to an existing Ray cluster (also RAY_ADDRESS)")
    run.add_argument("--resume", metavar="DIR", help="continue the run whose results are in DIR "
                     "from its last checkpoint (its config.toml is the spec)")
    commands.add_parser("keys", help="print the reference of every spec key (Markdown)")
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
        if args.spec or args.set or args.out:
            raise specs.SpecError("--resume DIR continues the run as it was specified: give no "
                                  "SPEC, --set or --out with it")
        return specs.resolve({**specs.load_file(f"{args.resume}/config.toml"),
                              "out_dir": str(args.resume)})
    overrides = specs.load_file(args.spec) if args.spec else {}
    overrides.update(specs.parse_set(args.set))
    if args.data_dir:
        overrides["data_dir"] = args.data_dir
    if args.out:
        overrides["out_dir"] = args.out
    if args.ray_address:
        overrides["ray.address"] = args.ray_address
    return specs.resolve(overrides)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "keys":
        print(specs.markdown_reference(), end="")
        return 0
    if args.command == "audit":
        return _audit(args)
    from fedsim.data import DataError
    from fedsim.runner.progress import RoundProgress, describe
    from fedsim.runner.simulation import simulate

    try:
        spec = resolve_run_spec(args)
        title = f"{spec['method']} on {spec['dataset']}"
        with RoundProgress(spec["rounds"], title) as progress:
            summary, out = simulate(spec, on_record=progress, resume=bool(args.resume))
    except (specs.SpecError, DataError, ValueError, FileNotFoundError) as err:
        print(f"fedsim: error: {err}", file=sys.stderr)
        return 2
    print(f"{summary['method']} on {summary['dataset']}: {summary['num_clients']} clients, "
          f"{summary['rounds']} rounds, {summary['wall_seconds']:.1f} s")
    for selection in ("best_test", "best_val", "final"):
        chosen = summary[selection]
        if chosen:
            metrics = chosen.get("metrics", chosen)
            where = f" (round {chosen['round']})" if "round" in chosen else ""
            print(f"  {selection}{where}: {describe(metrics)}")
    if privacy := summary["privacy"]:
        print(f"  privacy: epsilon {privacy['epsilon']:.4g} at delta {privacy['delta']:g} after "
              f"{privacy['releases']} training rounds of the most-asked client "
              f"(replacement: {privacy['epsilon_replace']:.4g})")
    print(f"results: {out} (summary.json, metrics.jsonl, curves.png)")
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
