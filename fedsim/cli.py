"""The ``fedsim`` command.

    fedsim run [SPEC.toml] [--out DIR] [--data-dir DIR] [--set key=value ...]
    fedsim run --resume DIR

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
    print(f"results: {out} (summary.json, metrics.jsonl, curves.png)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
