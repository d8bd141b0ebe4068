"""Your own Flower ServerApp running FedFACT post-processing (docs/plugins.md).

The strategy is built from plain constructor arguments; fedsim's runner is not involved. The
clients are fedsim's ClientApp (``fedsim.app.client_app:app``): it rebuilds each client's rows
and runs the client side of the method from the spec that every message carries ("config"
record, key "spec"), so the clients' settings are fedsim spec keys (docs/spec.md). The
settings both sides use (variant, criterion, dual_lr, bound, pretrain_rounds) are the
strategy's constructor arguments only: every message carries them to the clients, over the
spec's (PartitionedStrategy.client_settings).

Run settings (``--run-config``): num-server-rounds (30), pretrain-rounds (20), num-nodes (5,
the number of SuperNodes), state-dir (where the clients keep their private duals; default: a
new temporary folder, which only works when the clients run on this machine).
"""

from __future__ import annotations

import json
import tempfile

from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp

from fedsim.federation import load_federation
from fedsim.models import make_classifier
from fedsim.spec import resolve
from strategies.fedfact import FedFACTPost

NUM_CLIENTS = 5

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    config = context.run_config
    rounds = int(config.get("num-server-rounds", 30))
    pretrain_rounds = int(config.get("pretrain-rounds", 20))
    clients = {  # what fedsim's ClientApp needs: data, split, local training, ξ, β, local steps
        "method": "fedfact_post", "dataset": "adult", "model": "logreg",
        "partitioner": "dirichlet", "num_clients": NUM_CLIENTS, "fedavg.lr": 0.005,
        "fedavg.batch_size": 256, "fedfact.xi_global": 0.01, "fedfact.xi_local": 0.01,
        "state_dir": str(config.get("state-dir") or tempfile.mkdtemp(prefix="fedfact-")),
    }
    strategy = FedFACTPost(
        num_partitions=NUM_CLIENTS, num_nodes=int(config.get("num-nodes", NUM_CLIENTS)),
        fraction_train=1.0, pretrain_rounds=pretrain_rounds, variant="gl", criterion="dp",
        dual_lr=0.2,
        message_config={"spec": json.dumps(clients), "run-id": str(context.run_id)},
        on_round=lambda record: print(
            f"round {record['round']}: accuracy={record.get('accuracy', float('nan')):.4f} "
            f"dp_global={record.get('dp_global', float('nan')):.4f} "
            f"dp_local_max={record.get('dp_local_max', float('nan')):.4f}", flush=True))
    # The clients' own view of the data (same preparation, same split) sizes the model.
    data = load_federation(resolve(clients)).dataset
    model = make_classifier("logreg", data.num_features, data.num_classes)
    strategy.start(grid, ArrayRecord(model.state_dict()), num_rounds=rounds)
