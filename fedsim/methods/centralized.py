"""The centralized methods (fedsim/centralized, docs/centralized.md) as single-client runs: each
is a Trainer (model, optimizer, one epoch, evaluation) run by clients/centralized.py, with the
server's weighted mean (strategies/centralized.py) the identity on one client. SASRec is
EISAM's backbone, BPR-MF and LightGCN AURL's, MF RAID's."""

from __future__ import annotations

from typing import Any, Mapping

from fedsim.keys import Key
from fedsim.method import Method, strategy_arguments

KEYS = {
    "central.lr": Key(0.001, "Centralized methods (AURL, EISAM, RAID): Adam learning rate.",
                      low=0.0, high=100.0, low_open=True),
    "central.weight_decay": Key(0.0, "Centralized methods: Adam weight decay.", low=0.0,
                                high=100.0),
    "central.batch_size": Key(2048, "Centralized methods: training batch size.", low=1,
                              high=10_000_000),
    "central.dim": Key(64, "Centralized methods: embedding size of users and items.", low=1,
                       high=4096),
    "aurl.lambda_ga": Key(1.0, "AURL: weight of group alignment (MMD of tail to head "
                          "representations, items and users). 0 with aurl.lambda_gu = 0 = the "
                          "plain backbone. Default: best validation NDCG@10 of a 5-point sweep "
                          "(docs/centralized.md).", low=0.0, high=1e6),
    "aurl.lambda_gu": Key(0.1, "AURL: weight of global uniformity (users and items).", low=0.0,
                          high=1e6),
    "aurl.t": Key(2.0, "AURL: temperature t of the uniformity log-mean-exp(-t ||z - z'||^2).",
                  low=0.0, high=100.0, low_open=True),
    "aurl.l2": Key(1e-4, "AURL and its backbones: L2 weight on the batch's layer-0 embeddings "
                   "(sum of squares / 2 / batch size).", low=0.0, high=100.0),
    "eisam.mode": Key("e1", "EISAM: e1 = one shared perturbation along the gradient of the "
                      "item-weighted loss (two passes per step); e2 = closed-form sharpness "
                      "penalty on the item rows (one pass).", ("e1", "e2")),
    "eisam.rho": Key(0.05, "EISAM: radius rho (e1: perturbation norm; e2: penalty weight). "
                     "0 = plain SASRec, bit for bit.", low=0.0, high=100.0),
    "eisam.alpha": Key(1.0, "EISAM (and fedrecgel.eisam): item weights beta_i = min(beta_max, "
                       "(mean n / n_i)^alpha) over training counts n_i, normalised to mean 1 "
                       "over the trained items; 0 = all ones.", low=0.0, high=10.0),
    "eisam.beta_max": Key(10.0, "EISAM (and fedrecgel.eisam): cap of the item weights before "
                          "normalisation.", low=0.0, high=1e6, low_open=True),
    "raid.beta": Key(1.0, "RAID: weight of the transport penalty mean_u ||y_u - t_u||^2 in "
                     "phase 2. 0 = the undefended MF, bit for bit.", low=0.0, high=1e6),
    "raid.warmup": Key(10, "RAID: phase-1 epochs (BCE only) before the penalty starts.", low=0,
                       high=100_000),
    "raid.refresh": Key(5, "RAID: epochs between recomputations of the class barycenter and the "
                        "users' targets (the centroid-update frequency).", low=1, high=100_000),
    "raid.support": Key(256, "RAID: support points m of the free-support W2 barycenter (capped "
                        "at the number of users).", low=1, high=1_000_000),
    "raid.attribute": Key("gender", "RAID: the user attribute defended and attacked (MovieLens-"
                          "100K: gender, age_30 = age >= 30, age_group, occupation; synthetic-"
                          "rec: gender, age_group).",
                          ("gender", "age_30", "age_group", "occupation")),
    "raid.negatives": Key(4, "RAID: sampled negatives per training pair in the BCE loss.",
                          low=1, high=1000),
    "raid.noise": Key(0.0, "RAID's baseline defence: Gaussian noise added to the released user "
                      "embeddings after training, std = this x their RMS entry (evaluation and "
                      "attack see the noisy ones). 0 = none.", low=0.0, high=1e6),
    "raid.attack_seeds": Key(5, "RAID: attacker splits (80/20 over users) averaged in each "
                             "evaluation's attack scores.", low=1, high=1000),
}


def make_trainer(spec: Mapping[str, Any], data: Any, users: Any) -> Any:
    """The Trainer of the spec's centralized method on the rows of `users`."""
    from fedsim.methods import METHODS as ALL

    return ALL[spec["method"]].trainer_class()(spec, data, users)


def _build(spec, federation, runtime):
    from strategies.centralized import LocalTrainingFedAvg

    return LocalTrainingFedAvg(**strategy_arguments(spec, federation, runtime))


def _initial_arrays(spec, federation):
    import torch
    from flwr.app import ArrayRecord

    torch.manual_seed(spec["seed"])
    trainer = make_trainer(spec, federation.dataset, federation.train_parts[0])
    return ArrayRecord(trainer.build_model().state_dict())


METHODS = tuple(
    Method(name=name, task="recommendation", client="clients.centralized:CentralizedClient",
           build=_build, initial_arrays=_initial_arrays, headline="ndcg@10_full",
           models=models, trainer=trainer)
    for name, models, trainer in (
        ("aurl", ("bprmf", "lightgcn"), "fedsim.centralized.aurl:AURLTrainer"),
        ("sasrec", ("sasrec",), "fedsim.centralized.sasrec:SASRecTrainer"),
        ("eisam", ("sasrec",), "fedsim.centralized.eisam:EISAMTrainer"),
        ("raid", ("mf",), "fedsim.centralized.raid:RAIDTrainer")))
