"""FairFed (Ezzeldin et al. 2023), a fairness baseline: FedAvg whose aggregation weights move away
from clients whose local fairness gap differs from the global one. Client: clients/fairfed.py;
server: strategies/fairfed.py."""

from __future__ import annotations

from fedsim.keys import Key
from fedsim.method import Method, classifier_arrays, strategy_arguments

KEYS = {
    "fairfed.beta": Key(1.0, "FairFed: step beta of the aggregation-weight update w_k <- w_k - "
                        "beta (Delta_k - mean Delta), Delta_k = |F_global - F_k|. 0 = FedAvg.",
                        low=0.0, high=1e6),
    "fairfed.criterion": Key("dp", "FairFed: the tracked fairness metric F: demographic parity "
                             "(the paper's SPD) or equal opportunity (TPR differences).",
                             ("dp", "eop")),
}


def _build(spec, federation, runtime):
    from strategies.fairfed import FairFed

    return FairFed(beta=spec["fairfed.beta"], criterion=spec["fairfed.criterion"],
                   **strategy_arguments(spec, federation, runtime))


METHODS = (Method(name="fairfed", task="classification", client="clients.fairfed:FairFedClient",
                  build=_build, initial_arrays=classifier_arrays, headline="accuracy"),)
