"""FedNCF and FedMF (FedSGD with a server Adam; ../shared/research/fedrecgel.md): each client keeps
its user embedding private (client Adam, fedncf.client_lr) and uploads the gradient of the shared
tables; the server steps Adam (fedncf.server_lr) on the mean gradient. FedNCF uses the NeuMF
backbone, FedMF the MF one. Client: clients/fedncf.py; server: strategies/fedncf.py. FedRecGEL
(fedsim/methods/fedrecgel.py) reads the fedncf.* keys too."""

from __future__ import annotations

from fedsim.keys import Key
from fedsim.method import Method, recommender_arrays, strategy_arguments

KEYS = {
    "fedncf.server_lr": Key(0.001, "FedNCF: server Adam learning rate on the mean client gradient "
                            "(the authors' hard-coded 1e-3; their config's 1.5 is unused).",
                            low=0.0, high=100.0, low_open=True),
    "fedncf.client_lr": Key(0.1, "FedNCF: client Adam learning rate on the private user "
                            "embeddings (persistent per client).", low=0.0, high=100.0,
                            low_open=True),
    "fedncf.train_negatives": Key(4, "FedNCF: fresh negatives per positive each round.", low=1,
                                  high=1000),
    "fedncf.chunk_size": Key(128, "FedNCF: the loss is the sum over chunks of this many samples "
                             "of the chunk-mean BCE, as in the authors' code.", low=1,
                             high=1_000_000),
}


def fedsgd_arguments(spec, federation, runtime):
    """Arguments of the FedSGD + server Adam strategies (FedNCF, FedMF, FedRecGEL)."""
    from fedsim.models import backbone

    return {"server_lr": spec["fedncf.server_lr"], "item_tables": backbone(spec)[0].ITEM_TABLES,
            "dense_rows": spec["privacy.clip_norm"] > 0,
            **strategy_arguments(spec, federation, runtime)}


def _build(spec, federation, runtime):
    from strategies.fedncf import FedNCF

    return FedNCF(**fedsgd_arguments(spec, federation, runtime))


# One client and one server; the backbone is the spec's `model`.
METHODS = tuple(Method(name=name, task="recommendation", client="clients.fedncf:FedNCFClient",
                       build=_build, initial_arrays=recommender_arrays, headline="hr@10",
                       models=(model,), dp_upload="gradient")
                for name, model in (("fedncf", "neumf"), ("fedmf", "mf")))
