"""FedAvg (McMahan et al. 2017) on tabular classification: clients train the shared model for
fedavg.local_epochs and the server averages the weights, weighted by training rows. Client:
clients/fedavg.py; server: strategies/fedavg.py. FedFACT's pre-training, FairFed and FedFB use
its local training too (their descriptors read the fedavg.* keys)."""

from __future__ import annotations

from fedsim.keys import Key
from fedsim.method import Method, classifier_arrays, strategy_arguments

KEYS = {
    "fedavg.local_epochs": Key(1, "FedAvg: local epochs per round.", low=1, high=10_000),
    "fedavg.lr": Key(0.01, "FedAvg: client learning rate.", low=0.0, high=100.0, low_open=True),
    "fedavg.batch_size": Key(64, "FedAvg: client batch size.", low=1, high=1_000_000),
    "fedavg.optimizer": Key("adam", "FedAvg: client optimizer.", ("adam", "sgd")),
}


def _build(spec, federation, runtime):
    from strategies.fedavg import FedAvg

    return FedAvg(**strategy_arguments(spec, federation, runtime))


METHODS = (Method(name="fedavg", task="classification", client="clients.fedavg:FedAvgClient",
                  build=_build, initial_arrays=classifier_arrays, headline="accuracy",
                  dp_upload="update"),)
