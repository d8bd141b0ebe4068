"""How much of PFedRec's sampled HR@10 comes from its candidates having been training negatives.

A PFedRec client (clients/pfedrec.py) never draws its held-out test item as a training negative,
so that item keeps the global row in the client's own item table, while its 99 sampled test
candidates can be drawn and get pushed down by the large item step. This script runs PFedRec on
a FedRecGEL-protocol spec in-process (tests/helpers.run_fake: the same strategy and clients as
`fedsim run`, without Ray) in one of two arms and prints the best and final test metrics:

- ``as-is``: the method unchanged; it also reports the share of each client's test candidates
  it drew as a training negative at least once;
- ``control``: training negatives also exclude the client's test (and validation) candidates,
  which leaves them as untouched as the test item.

Nothing here changes the method or a table: it is a measurement, quoted in experiments/README.md
(PFedRec). Run from the repository root:

    FEDSIM_DATA_DIR=../shared/data python experiments/pfedrec_candidate_control.py as-is --seed 0
    FEDSIM_DATA_DIR=../shared/data python experiments/pfedrec_candidate_control.py control --seed 0
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from clients import pfedrec  # noqa: E402
from clients.fedncf import distinct_negatives  # noqa: E402
from fedsim.federation import load_federation  # noqa: E402
from fedsim.spec import load_file, resolve  # noqa: E402
from tests.helpers import run_fake  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("arm", choices=("as-is", "control"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--spec", default="experiments/fedrecgel/fedrecgel_movielens100k.toml")
    args = parser.parse_args()

    drawn: dict[int, set[int]] = {}  # user -> items drawn as training negatives, all rounds
    original = pfedrec.PFedRecClient._draw_sample

    def without_candidates(self, server_round):
        """The client's own sampler with its evaluation candidates also excluded."""
        rng = np.random.default_rng([self.seed, self.partition_id, server_round])
        positives = self.data.user_items(self.user)
        rated = np.unique(np.concatenate([positives, self.held_out(), self.candidates()]))
        negatives = distinct_negatives(rng, rated, self.data.num_items, len(positives),
                                       self.negatives)
        items = np.concatenate([positives[:, None], negatives], axis=1).reshape(-1)
        labels = np.tile(np.float32([1] + [0] * self.negatives), len(positives))
        return items, labels, [rng.permutation(len(items)) for _ in range(self.epochs)]

    sampler = original if args.arm == "as-is" else without_candidates

    def recording(self, server_round):
        items, labels, orders = sampler(self, server_round)
        drawn.setdefault(self.user, set()).update(items[labels == 0].tolist())
        return items, labels, orders

    pfedrec.PFedRecClient._draw_sample = recording
    spec = load_file(ROOT / args.spec)
    spec.update({"method": "pfedrec", "rounds": args.rounds, "seed": args.seed,
                 "out_dir": tempfile.mkdtemp(prefix="pfedrec-control-")})
    _, history, _ = run_fake(spec)
    data = load_federation(resolve(spec)).dataset
    evaluated = [r for r in history if "hr@10" in r and r["round"] > 0]
    best = max(evaluated, key=lambda r: r["hr@10"])  # first on ties, as summary.json's best_test
    shares = [len(set(data.test_negatives[u].tolist()) & items) / data.test_negatives.shape[1]
              for u, items in drawn.items()]
    print(json.dumps({
        "arm": args.arm, "seed": args.seed, "rounds": args.rounds,
        "best_test": {"round": best["round"], "hr@10": best["hr@10"], "ndcg@10": best["ndcg@10"]},
        "final": {"round": history[-1]["round"], "hr@10": history[-1]["hr@10"],
                  "ndcg@10": history[-1]["ndcg@10"],
                  "hr@10_full": history[-1].get("hr@10_full")},
        "clients_trained": len(drawn),
        "test_candidates_drawn_as_negatives": float(np.mean(shares)),
        "test_item_drawn_as_negative": float(np.mean(
            [int(data.test_items[u]) in items for u, items in drawn.items()]))}))


if __name__ == "__main__":
    main()
