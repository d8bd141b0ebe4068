"""FedFB (Zeng et al. 2021), a fairness baseline: FedAvg with per-(group, label) loss weights
that the server moves toward equal group losses. Client: clients/fedfb.py; server: strategies/fedfb.py."""

from __future__ import annotations

from fedsim.keys import Key
from fedsim.method import Method, classifier_arrays, strategy_arguments

KEYS = {
    "fedfb.step": Key(0.3, "FedFB: step alpha of the server's update of the per-(group, label) "
                      "loss weights (alpha / sqrt(t - 1) before round t); the authors' default. "
                      "0 = FedAvg.", low=0.0, high=1e6),
}


def _build(spec, federation, runtime):
    from strategies.fedfb import FedFB

    return FedFB(step=spec["fedfb.step"], **strategy_arguments(spec, federation, runtime))


METHODS = (Method(name="fedfb", task="classification", client="clients.fedfb:FedFBClient",
                  build=_build, initial_arrays=classifier_arrays, headline="accuracy"),)
