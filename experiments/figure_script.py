"""What every figure script of experiments/ shares: its command line and saving the figure.

A figure script draws from the cached runs of one table (tables.py) and never starts a run;
it provides ``collect(seeds, runs) -> (values, missing labels)`` and ``draw(values, out)``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent


def figure_main(table: str, default_name: str, description: str,
                collect: Callable[[list[int], Path], tuple[dict, list[str]]],
                draw: Callable[[dict, Path], None], argv: list[str] | None = None) -> int:
    """Parse ``--seeds/--runs/--out``, draw the figure of ``table``'s cached runs; 1 if none."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--runs", type=Path, default=Path("runs/tables"))
    parser.add_argument("--out", type=Path, default=HERE / "figures" / default_name)
    args = parser.parse_args(argv)
    values, missing = collect(args.seeds, args.runs)
    for label in missing:
        print(f"{table} figure: not run yet, left out: {label}")
    if not values:
        print(f"{table} figure: no cached run of the {table} table; run "
              f"`python experiments/tables.py {table}` first")
        return 1
    draw(values, args.out)
    print(f"{table} figure: written to {args.out}")
    return 0


def save(figure, out: Path) -> None:
    """Write ``figure`` to ``out`` (creating its folder) and free it."""
    import matplotlib.pyplot as plt

    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100)
    plt.close(figure)
