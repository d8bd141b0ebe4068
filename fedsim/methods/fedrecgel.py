"""FedRecGEL (../shared/research/fedrecgel.md): FedNCF's protocol with sharpness-aware minimisation
of the shared tables (radius fedrecgel.rho_sh) and the private user embeddings (fedrecgel.rho_ns);
our item-centric aggregation and EISAM client optimizer as options. Client: clients/fedrecgel.py;
server: strategies/fedrecgel.py; the fedncf.* keys set its learning rates, negatives and chunks."""

from __future__ import annotations

from fedsim.keys import Key, SpecError
from fedsim.method import Method, recommender_arrays
from fedsim.methods.fedncf import fedsgd_arguments

KEYS = {
    "fedrecgel.rho_sh": Key(0.02, "FedRecGEL: SAM radius of the shared group (item rows, MLP "
                            "tower, head; joint norm). 0 = no shared SAM pass. Server lr, client "
                            "lr, negatives and chunk size are the fedncf.* keys.", low=0.0,
                            high=100.0),
    "fedrecgel.rho_ns": Key(0.02, "FedRecGEL: SAM radius of the private user embeddings (joint "
                            "norm). 0 = no private SAM pass.", low=0.0, high=100.0),
    "fedrecgel.item_centric": Key(False, "FedRecGEL: our item-centric mode: one SAM perturbation "
                                  "of norm rho_sh per item row, and item rows averaged on the "
                                  "server over the clients that touched the item. false = the "
                                  "authors' algorithm."),
    "fedrecgel.eisam": Key(False, "FedRecGEL: our EISAM client optimizer (E1): the shared-group "
                           "perturbation follows the gradient of the loss weighted by the "
                           "positive item's beta (eisam.alpha, eisam.beta_max; from item counts "
                           "every client reports once) and the upload is g + g~_beta - g_beta. "
                           "false = the authors' SAM."),
}


def _build(spec, federation, runtime):
    from strategies.fedrecgel import FedRecGEL

    return FedRecGEL(item_centric=spec["fedrecgel.item_centric"], eisam=spec["fedrecgel.eisam"],
                     eisam_alpha=spec["eisam.alpha"], eisam_beta_max=spec["eisam.beta_max"],
                     **fedsgd_arguments(spec, federation, runtime))


def _check(spec):
    clip = spec["privacy.clip_norm"]
    if clip > 0 and spec["fedrecgel.item_centric"]:
        raise SpecError(f"fedrecgel.item_centric = true with privacy.clip_norm = {clip}: "
                        "item-centric aggregation needs the item rows each client touched, "
                        "which DP mode hides (every client uploads every row): expected "
                        "fedrecgel.item_centric = false")
    if clip > 0 and spec["fedrecgel.eisam"]:
        raise SpecError(f"fedrecgel.eisam = true with privacy.clip_norm = {clip}: the item "
                        "counts each client reports for the EISAM weights are not privatised: "
                        "expected fedrecgel.eisam = false")


METHODS = (Method(name="fedrecgel", task="recommendation",
                  client="clients.fedrecgel:FedRecGELClient", build=_build,
                  initial_arrays=recommender_arrays, headline="hr@10", models=("neumf", "mf"),
                  dp_upload="gradient", check=_check),)
