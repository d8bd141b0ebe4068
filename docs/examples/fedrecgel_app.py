"""Your own Flower ServerApp running FedRecGEL (docs/plugins.md).

The strategy is built from plain constructor arguments; fedsim's runner is not involved. The
clients are fedsim's ClientApp (``fedsim.app.client_app:app``), one logical client per
FilmTrust user: it rebuilds each user's interactions and runs FedRecGEL's client (SAM on the
private user embedding and the shared parameters) from the spec that every message carries.
The SAM radii and the client learning rate are therefore spec keys; the server's Adam and the
item-centric switch are constructor arguments.

Run settings (``--run-config``): num-server-rounds (100), fraction-train (0.1), num-nodes (16,
the number of SuperNodes), state-dir (where the clients keep their user embeddings; default: a
new temporary folder, which only works when the clients run on this machine).
"""

from __future__ import annotations

import json
import tempfile

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedsim.federation import load_federation
from fedsim.spec import resolve
from strategies.fedrecgel import FedRecGEL

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    config = context.run_config
    clients = {  # what fedsim's ClientApp needs: data, model sizes, SAM radii, client lr
        "method": "fedrecgel", "dataset": "filmtrust", "model": "neumf",
        "partitioner": "natural", "fedrecgel.rho_sh": 0.0, "fedrecgel.rho_ns": 0.02,
        "state_dir": str(config.get("state-dir") or tempfile.mkdtemp(prefix="fedrecgel-")),
    }
    # The clients' own view of the data: one client per user; the item count sizes the model.
    federation = load_federation(resolve(clients))
    strategy = FedRecGEL(
        num_partitions=federation.num_clients, num_nodes=int(config.get("num-nodes", 16)),
        fraction_train=float(config.get("fraction-train", 0.1)), server_lr=1e-3,
        item_centric=False,
        message_config={"spec": json.dumps(clients), "run-id": str(context.run_id)},
        on_round=lambda record: print(
            f"round {record['round']}: hr@10={record.get('hr@10', float('nan')):.4f} "
            f"ndcg@10={record.get('ndcg@10', float('nan')):.4f}", flush=True))
    strategy.start(grid, FedRecGEL.initial_arrays(num_items=federation.dataset.num_items),
                   num_rounds=int(config.get("num-server-rounds", 100)))
