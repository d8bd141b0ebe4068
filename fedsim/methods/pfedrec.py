"""PFedRec (Zhang et al., IJCAI 2023; ../shared/research/pfedrec.md): each client (one user) keeps
its score function sigmoid(w_u . e + b_u) and its fine-tuned item table; the server averages the
item tables. Defaults are the authors' train.py (the spec's `fraction` = 1.0 is theirs, the
example specs set it). The model is fixed (pfedrec.dim wide): the spec's `model` is not used.
Client: clients/pfedrec.py; server: strategies/pfedrec.py; the authors' split and candidates:
data.protocol = "pfedrec"."""

from __future__ import annotations

from fedsim.keys import Key, SpecError
from fedsim.method import Method, strategy_arguments

KEYS = {
    "pfedrec.client_lr": Key(0.1, "PFedRec: SGD learning rate of the score function (w_u, b_u); "
                             "the item rows step with client_lr x num_items x lr_eta.", low=0.0,
                             high=100.0, low_open=True),
    "pfedrec.lr_eta": Key(80.0, "PFedRec: item-table step multiplier (the authors' lr_eta).",
                          low=0.0, high=1e6, low_open=True),
    "pfedrec.batch_size": Key(256, "PFedRec: local batch size (each batch takes the two steps).",
                              low=1, high=1_000_000),
    "pfedrec.train_negatives": Key(4, "PFedRec: fresh negatives per positive each round.", low=1,
                                   high=1000),
    "pfedrec.dim": Key(32, "PFedRec: width of the item table and the score function.", low=1,
                       high=4096),
    "pfedrec.local_epochs": Key(1, "PFedRec: local epochs per round.", low=1, high=1000),
}


def _check(spec):
    if spec["partitioner"] != "natural" or spec["partition.ids_per_client"] != 1:
        raise SpecError(f"method = 'pfedrec' needs one user per client (partitioner = 'natural', "
                        f"partition.ids_per_client = 1); got partitioner = "
                        f"{spec['partitioner']!r}, partition.ids_per_client = "
                        f"{spec['partition.ids_per_client']}")


def _build(spec, federation, runtime):
    from strategies.pfedrec import PFedRec

    return PFedRec(**strategy_arguments(spec, federation, runtime))


def _initial_arrays(spec, federation):
    from strategies.pfedrec import PFedRec

    return PFedRec.initial_arrays(federation.dataset.num_items, spec["pfedrec.dim"], spec["seed"])


METHODS = (Method(name="pfedrec", task="recommendation", client="clients.pfedrec:PFedRecClient",
                  build=_build, initial_arrays=_initial_arrays, headline="hr@10",
                  dp_upload=None, check=_check),)
