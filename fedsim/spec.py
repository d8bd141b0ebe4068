"""Experiment specs: the one place where every run setting is declared, documented and checked.

A spec is a TOML file of scalars: top-level keys name the experiment (method, dataset, ...),
and each table holds the settings of one part, e.g. ``[fedncf] server_lr = 0.001``. Flattened,
the table keys read ``fedncf.server_lr``; that flat form is what ``--set key=value`` takes, what
Flower's ``--run-config`` passes to the ServerApp, and what ``[tool.flwr.app.config]`` in
pyproject.toml declares (a test keeps that table equal to :data:`SCHEMA`'s defaults, because
``flwr run`` refuses overrides of keys it does not declare).

``docs/spec.md`` is generated from :data:`SCHEMA` (``python -m fedsim.spec``), so the docs and
the checks cannot drift apart.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping


class SpecError(ValueError):
    """A spec key is unknown, or its value has the wrong type or is out of range."""


@dataclass(frozen=True)
class Key:
    """One spec key: its default (which also fixes its type), meaning and allowed values."""

    default: bool | int | float | str
    doc: str
    choices: tuple[str, ...] | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # True: the value must be strictly greater than `low`
    # Words accepted beside numbers (nodes = "auto"); `number` is then the numbers' type.
    words: tuple[str, ...] = ()
    number: type | None = None

    @property
    def kind(self) -> type:
        return self.number or type(self.default)

    def allowed(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        kind = {"bool": "a bool", "int": "an int", "float": "a float", "str": "a string"}[
            self.kind.__name__]
        kind = "".join(f"{w!r} or " for w in self.words) + kind
        if self.low is None and self.high is None:
            return kind
        lo = "" if self.low is None else ("(" if self.low_open else "[") + f"{self.low:g}"
        hi = "" if self.high is None else f"{self.high:g}]"
        if self.low is not None and self.high is not None:
            return f"{kind} in {lo}, {hi}"
        if self.low is not None:
            return f"{kind} {'>' if self.low_open else '>='} {self.low:g}"
        return f"{kind} <= {self.high:g}"


# Method -> the task it solves; a method's dataset and model must be of that task.
METHOD_TASKS = {"fedavg": "classification", "fedncf": "recommendation",
                "fedmf": "recommendation", "fedrecgel": "recommendation",
                "fedfact_post": "classification", "fedfact_in": "classification",
                "fairfed": "classification", "fedfb": "classification",
                "aurl": "recommendation", "sasrec": "recommendation",
                "eisam": "recommendation", "raid": "recommendation"}
METHODS = tuple(METHOD_TASKS)
DATASETS = (
    "synthetic-rec", "filmtrust", "amazon-video", "lastfm-2k", "movielens-100k",
    "synthetic-tabular", "adult", "compas", "bank", "adult-hours", "compas-scores",
)
RECOMMENDATION_DATASETS = DATASETS[:5]
PARTITIONERS = ("natural", "iid", "dirichlet", "dirichlet_capped", "hetero", "single")
MODEL_TASKS = {"neumf": "recommendation", "mf": "recommendation", "logreg": "classification",
               "mlp": "classification", "bprmf": "recommendation", "lightgcn": "recommendation",
               "sasrec": "recommendation"}
# Methods tied to some backbones, as tuples (the others take any model of their task).
METHOD_MODELS = {"fedncf": ("neumf",), "fedmf": ("mf",), "fedrecgel": ("neumf", "mf"),
                 "aurl": ("bprmf", "lightgcn"), "sasrec": ("sasrec",), "eisam": ("sasrec",),
                 "raid": ("mf",)}
MODELS = tuple(MODEL_TASKS)
# Methods that support client-side DP (privacy.clip_norm > 0) and what their shared upload
# is: "update" = model weights, clipped as the change from the global weights received; "gradient" =
# a gradient of the shared parameters, clipped as it is (fedsim/privacy/mechanism.py). FedFACT
# is absent: its group/label counts and dual gradients are not privatised.
DP_UPLOADS = {"fedavg": "update", "fedncf": "gradient", "fedmf": "gradient",
              "fedrecgel": "gradient"}

SCHEMA: dict[str, Key] = {
    # --- what runs ---------------------------------------------------------------------
    "method": Key("fedncf", "Federated method (server strategy + client objective).", METHODS),
    "dataset": Key("synthetic-rec", "Dataset name (see the README's dataset table).", DATASETS),
    "partitioner": Key("natural", "How rows (users for recommendation, samples for tabular "
                       "data) are split into clients.", PARTITIONERS),
    "model": Key("neumf", "Model: neumf or mf for recommendation (fedncf needs neumf, fedmf "
                 "needs mf, fedrecgel takes either; aurl takes bprmf or lightgcn; sasrec and eisam "
                 "take sasrec; raid takes mf, sized by central.dim); logreg or "
                 "mlp for tabular data.",
                 MODELS),
    "rounds": Key(20, "Number of federated rounds.", low=1, high=100_000),
    "seed": Key(0, "Training seed: model init, client sampling, negatives, local batches.",
                low=0, high=2**31 - 1),
    "fraction": Key(0.1, "Fraction of clients sampled for training each round "
                    "(floor(fraction * num_clients), at least 1).", low=0.0, high=1.0,
                    low_open=True),
    "num_clients": Key(0, "Number of clients. 0 = derived from the data (natural: one client per "
                       "partition.ids_per_client users; single: 1). Required (> 0) for iid, "
                       "dirichlet, dirichlet_capped and hetero.", low=0, high=1_000_000),
    "nodes": Key("auto", "Simulated Flower nodes hosting the clients (node i hosts the clients p "
                 "with p % nodes == i; capped at the number of clients). Results do not depend on "
                 "it beyond float rounding (README, How clients are simulated); speed does. "
                 "'auto' = twice the Ray actors of this machine (CPUs / ray.client_cpus), what "
                 "benchmarks/README.md found fastest; 0 = one node per client.", low=0,
                 high=1_000_000, words=("auto",), number=int),
    "cohort": Key(True, "Cohort mode: a node computes the FedNCF/FedMF/FedRecGEL clients of one "
                  "message in one vectorised pass (same per-client math, float-tolerance equal "
                  "to one by one). false = one client at a time (bit-reproducible across node "
                  "layouts)."),
    "node_sums": Key(True, "Node-level partial aggregation: where the method aggregates a phase "
                     "as a sum (FedAvg, FedNCF, FedMF, FedRecGEL training; the recommenders' "
                     "evaluation), each node checks its clients' replies and sends one sum of "
                     "the valid ones (fedsim/node_sums.py); equal to per-client replies to float "
                     "tolerance. false = one reply per client."),
    "eval_every": Key(1, "Evaluate every this many rounds (the last round is always evaluated).",
                      low=1, high=100_000),
    "eval_full_every": Key(1, "Recommendation: compute the full-ranking metrics at every this "
                           "many rounds' evaluation (and the last round's); the sampled ones at "
                           "every evaluation. Full ranking scores every item for every user.",
                           low=1, high=100_000),
    "data_dir": Key("", "Directory holding the dataset folders, the only place looked at when set "
                    "(no fallback, no download); empty = FEDSIM_DATA_DIR, then the user cache "
                    "(~/.cache/fedsim), then a download into the cache."),
    "out_dir": Key("", "Where results go; empty = runs/<method>-<dataset>-<time> under the current "
                   "directory. Use an absolute path with `flwr run` (its cwd is the SuperLink's)."),
    "tensorboard": Key(False, "Also write each round's metrics as TensorBoard scalars to "
                       "<out_dir>/tensorboard (needs the tensorboard package: pip install "
                       "'fedsim[tensorboard]')."),
    # --- data preparation ----------------------------------------------------------------
    "data.seed": Key(42, "Seed of the data preparation: sampled test/validation negatives "
                     "(recommendation), train/test split (tabular). 42 as the FedRecGEL authors.",
                     low=0, high=2**31 - 1),
    "data.synthetic_users": Key(500, "synthetic-rec: number of users (scaling benchmarks).",
                                low=10, high=10_000_000),
    "data.protocol": Key("clean", "Recommendation: the split's rules (fedsim/data/interactions.py "
                         "PROTOCOLS). 'fedrecgel': the FedRecGEL authors' pipeline exactly "
                         "(duplicates kept, latest row = test with ties to the lowest item id, no "
                         "validation item); 'clean': duplicates merged and a validation item "
                         "(the second-latest row); 'recbole': RecBole's leave-one-out (ties in "
                         "file order, validation item, duplicates kept).",
                         ("clean", "fedrecgel", "recbole")),
    "data.test_negatives": Key(99, "Recommendation: sampled negatives per test/validation item.",
                               low=1, high=10_000),
    "data.head_fraction": Key(0.2, "Recommendation: top fraction of items by training count that "
                              "form the head (the rest is the tail).", low=0.0, high=1.0,
                              low_open=True),
    "data.test_fraction": Key(0.4, "Tabular: share of rows in the test split.", low=0.0,
                              high=0.9, low_open=True),
    # --- partitioner parameters --------------------------------------------------------------
    "partition.ids_per_client": Key(1, "natural: users per client.", low=1, high=1_000_000),
    "partition.column": Key("sensitive", "dirichlet, dirichlet_capped: column whose values are "
                            "split by Dirichlet "
                            "proportions: 'sensitive' or 'label' (tabular), or a user attribute "
                            "such as 'gender' (recommendation)."),
    "partition.alpha": Key(0.5, "dirichlet, dirichlet_capped: concentration of the Dirichlet "
                           "(smaller = more skewed). The FedFACT authors' code draws Dir(2 x "
                           "their alpha): their 0.5 is 1.0 here.", low=0.0, high=1e6,
                           low_open=True),
    "partition.min_size": Key(10, "dirichlet: minimum rows per client (redrawn until met).",
                              low=0, high=1_000_000),
    "partition.min_per_value": Key(20, "dirichlet_capped: minimum rows of every value of "
                                   "partition.column per client, train and test rows together "
                                   "(redrawn until met; 20 = LoGoFair's sampler).", low=0,
                                   high=1_000_000),
    "partition.low": Key(0.2, "hetero: lowest per-client target A-Y correlation.", low=0.0,
                         high=1.0),
    "partition.high": Key(0.8, "hetero: highest per-client target A-Y correlation.", low=0.0,
                          high=1.0),
    # --- models ----------------------------------------------------------------------------
    "neumf.factor_dim": Key(32, "NeuMF: GMF embedding size; the MLP embedding size is "
                            "factor_dim * 2**(mlp_layers - 1).", low=1, high=4096),
    "neumf.mlp_layers": Key(3, "NeuMF: number of MLP tower layers.", low=1, high=8),
    "mf.factor_dim": Key(32, "MF: user and item embedding size.", low=1, high=4096),
    "mlp.hidden": Key(32, "mlp: hidden units of the one-hidden-layer classifier.", low=1,
                      high=100_000),
    "lightgcn.layers": Key(3, "LightGCN: propagation layers; the output is the mean of layers "
                           "0..layers (size: central.dim).", low=0, high=16),
    "sasrec.blocks": Key(2, "SASRec: self-attention blocks (size: central.dim).", low=1,
                         high=64),
    "sasrec.heads": Key(1, "SASRec: attention heads per block (central.dim must be divisible "
                        "by it).", low=1, high=64),
    "sasrec.max_len": Key(50, "SASRec: input length (the newest items of a sequence); training "
                          "windows hold this many targets.", low=1, high=100_000),
    "sasrec.dropout": Key(0.2, "SASRec: dropout on the embeddings, attention weights and "
                          "feed-forward layers.", low=0.0, high=0.9),
    # --- runtime -----------------------------------------------------------------------------
    "state_dir": Key("", "Node-local directory for the clients' private state (user embeddings, "
                     "personal models, local duals), one file per client and round; empty = "
                     "<out_dir>/client_state."),
    "round_timeout": Key(3600.0, "Seconds the server waits for replies in each phase of a round; "
                         "clients that have not replied by then count as failed.", low=0.0,
                         high=1e7, low_open=True),
    "min_replies": Key(0.0, "Fraction of the clients asked to train whose valid replies a round "
                       "needs to count; below it the model is left unchanged.", low=0.0,
                       high=1.0),
    "max_reply_mb": Key(64.0, "Largest array payload (MiB) accepted from one client in one "
                        "reply; larger replies are rejected.", low=0.0, high=1e6, low_open=True),
    "faults.rate": Key(0.0, "Injected failures: probability that a client fails a training "
                       "round (drawn from seed, client and round).", low=0.0, high=1.0),
    "faults.kind": Key("exception", "Injected failure: raise an exception, or straggle "
                       "(reply after faults.delay seconds).", ("exception", "straggler")),
    "faults.delay": Key(5.0, "Seconds an injected straggler waits before replying.", low=0.0,
                        high=1e6),
    "ray.client_cpus": Key(1, "CPUs reserved per simulated client actor (actors = CPUs / this).",
                           low=1, high=1024),
    "ray.address": Key("", "Address of an existing Ray cluster to attach to (also RAY_ADDRESS); "
                       "empty = start a local Ray instance."),
    # --- methods -------------------------------------------------------------------------------
    "fedavg.local_epochs": Key(1, "FedAvg: local epochs per round.", low=1, high=10_000),
    "fedavg.lr": Key(0.01, "FedAvg: client learning rate.", low=0.0, high=100.0, low_open=True),
    "fedavg.batch_size": Key(64, "FedAvg: client batch size.", low=1, high=1_000_000),
    "fedavg.optimizer": Key("adam", "FedAvg: client optimizer.", ("adam", "sgd")),
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
    "fedfact.pretrain_rounds": Key(10, "FedFACT post: FedAvg rounds (fedavg.* keys) before the "
                                   "dual stage; the remaining rounds optimise the duals.", low=0,
                                   high=100_000),
    "fedfact.variant": Key("gl", "FedFACT: active constraints: global (g), local (l) or both.",
                           ("g", "l", "gl")),
    "fedfact.criterion": Key("dp", "FedFACT: fairness criterion (group-vs-population form): "
                             "demographic parity, equal opportunity or equalized odds.",
                             ("dp", "eop", "eo")),
    "fedfact.xi_global": Key(0.01, "FedFACT: allowed global disparity xi_g (0 = exact parity).",
                             low=0.0, high=1.0),
    "fedfact.xi_local": Key(0.01, "FedFACT: allowed local disparity xi_l at every client.",
                            low=0.0, high=1.0),
    "fedfact.bound": Key(5.0, "FedFACT: radius B_d of the L1 ball the duals are projected onto.",
                         low=0.0, high=1e6, low_open=True),
    "fedfact.beta": Key(0.1, "FedFACT post: temperature of the smoothed max in the dual "
                        "objective (and of the randomised prediction with smoothing = "
                        "'logsumexp'); the paper's 0.1 for softmax, OptFair's 0.02 (DP) for "
                        "logsumexp.", low=0.0, high=100.0, low_open=True),
    "fedfact.smoothing": Key("softmax", "FedFACT post: smoothed max of the dual objective and "
                             "the classifier it prices. softmax = the paper's sigma_beta "
                             "(softmax-weighted mean) with hard argmax predictions; logsumexp = "
                             "beta * logsumexp(z / beta) with randomised predictions softmax(z / "
                             "beta), evaluated by their expected confusion counts (the authors' "
                             "OptFair code): at stationary duals that classifier meets the "
                             "constraints exactly in-sample, where sigma_beta's hard argmax "
                             "overshoots (fedsim/fairness/calibration.py).",
                             ("softmax", "logsumexp")),
    "fedfact.dual_lr": Key(0.2, "FedFACT: step size of the dual updates (server lambda; client "
                           "mu_k, taken on mu_k / p_k).", low=0.0, high=1e6, low_open=True),
    "fedfact.group_calibration": Key("auto", "FedFACT post: shift the model's class scores per "
                                     "sensitive group to each client's group label rates "
                                     "before calibrating; auto = on for eop/eo (their plug-in "
                                     "rates use the scores as label probabilities), off for dp.",
                                     ("auto", "on", "off")),
    "fedfact.weight_lr": Key(0.3, "FedFACT in: rate of the exponentiated-weights update of the "
                             "mixture weight of shared and personal model.", low=0.0,
                             high=1e6),
    "fedfact.dual_step": Key("plain", "FedFACT post: server step on lambda: plain (dual_lr, the "
                             "paper's) or scaled per constraint by the pooled share of its "
                             "(group, label event) cell (ours, as the clients' mu_k steps); "
                             "plain diverges with small groups (strategies/fedfact.py).",
                             ("plain", "scaled")),
    "fedfact.local_steps": Key(20, "FedFACT post: projected gradient steps on the local duals "
                               "per round.", low=1, high=100_000),
    "fairfed.beta": Key(1.0, "FairFed: step beta of the aggregation-weight update w_k <- w_k - "
                        "beta (Delta_k - mean Delta), Delta_k = |F_global - F_k|. 0 = FedAvg.",
                        low=0.0, high=1e6),
    "fairfed.criterion": Key("dp", "FairFed: the tracked fairness metric F: demographic parity "
                             "(the paper's SPD) or equal opportunity (TPR differences).",
                             ("dp", "eop")),
    "fedfb.step": Key(0.3, "FedFB: step alpha of the server's update of the per-(group, label) "
                      "loss weights (alpha / sqrt(t - 1) before round t); the authors' default. "
                      "0 = FedAvg.", low=0.0, high=1e6),
    # --- differential privacy ------------------------------------------------------------------
    "privacy.clip_norm": Key(0.0, "Client-side differential privacy of the shared uploads: "
                             "each client clips its upload (FedAvg: the model update; FedNCF, "
                             "FedMF, FedRecGEL: the gradient, over every item row) to this L2 "
                             "norm and adds Gaussian noise (docs/privacy.md). 0 = off.",
                             low=0.0, high=1e6),
    "privacy.noise_multiplier": Key(1.0, "DP: noise std over privacy.clip_norm (when "
                                    "privacy.clip_norm > 0). 0 = clipping only, no guarantee "
                                    "(epsilon = inf).", low=0.0, high=1e6),
    "privacy.delta": Key(1e-5, "DP: the delta at which the budget epsilon is reported (per "
                         "client, over the rounds it trained; docs/results.md).", low=0.0,
                         high=0.1, low_open=True),
}

DEFAULTS: dict[str, bool | int | float | str] = {k: key.default for k, key in SCHEMA.items()}


def _check(name: str, value: Any) -> bool | int | float | str:
    """Return `value` converted to the key's type, or raise SpecError naming key and value."""
    if name not in SCHEMA:
        close = [k for k in SCHEMA if k.split(".")[-1] == name.split(".")[-1]]
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise SpecError(f"unknown spec key {name!r}.{hint} Known keys are listed in docs/spec.md.")
    key = SCHEMA[name]
    if isinstance(value, str) and value in key.words:
        return value
    kind = key.kind
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not kind:
        raise SpecError(f"{name} = {value!r}: expected {key.allowed()}, "
                        f"got a {type(value).__name__}")
    if key.choices is not None and value not in key.choices:
        raise SpecError(f"{name} = {value!r}: expected {key.allowed()}")
    if kind in (int, float):
        too_low = key.low is not None and (value <= key.low if key.low_open else value < key.low)
        too_high = key.high is not None and value > key.high
        if too_low or too_high or value != value:  # value != value catches NaN
            raise SpecError(f"{name} = {value!r}: expected {key.allowed()}")
    return value


def resolve(overrides: Mapping[str, Any] | None = None) -> dict[str, bool | int | float | str]:
    """Defaults merged with flat `overrides`, every key and value checked, cross-key rules too."""
    spec = dict(DEFAULTS)
    for name, value in (overrides or {}).items():
        spec[name] = _check(name, value)
    _check_combination(spec)
    return spec


def _check_combination(spec: Mapping[str, Any]) -> None:
    recommendation = spec["dataset"] in RECOMMENDATION_DATASETS
    task = "recommendation" if recommendation else "classification"
    for key, tasks in (("model", MODEL_TASKS), ("method", METHOD_TASKS)):
        if tasks[spec[key]] != task:
            allowed = " or ".join(repr(name) for name, t in tasks.items() if t == task)
            raise SpecError(f"{key} = {spec[key]!r} does not fit dataset = {spec['dataset']!r} "
                            f"({task}): expected {allowed}")
    if spec["partitioner"] == "natural" and not recommendation:
        raise SpecError(f"partitioner = 'natural' needs a recommendation dataset (one client per "
                        f"user); dataset = {spec['dataset']!r} is tabular: use iid, dirichlet, "
                        "hetero or single")
    if spec["partitioner"] == "hetero" and recommendation:
        raise SpecError("partitioner = 'hetero' needs a tabular dataset (label and sensitive "
                        f"attribute); dataset = {spec['dataset']!r} is a recommendation dataset")
    if (spec["partitioner"] in ("iid", "dirichlet", "dirichlet_capped", "hetero")
            and spec["num_clients"] < 1):
        raise SpecError(f"num_clients = {spec['num_clients']}: partitioner = "
                        f"{spec['partitioner']!r} needs num_clients >= 1")
    if spec["partitioner"] == "single" and spec["num_clients"] not in (0, 1):
        raise SpecError(f"num_clients = {spec['num_clients']}: partitioner = 'single' means "
                        "exactly 1 client (set 0 or 1)")
    if spec["method"] == "fedfact_post" and spec["fedfact.pretrain_rounds"] >= spec["rounds"]:
        raise SpecError(f"fedfact.pretrain_rounds = {spec['fedfact.pretrain_rounds']} leaves no "
                        f"post-processing round: expected < rounds = {spec['rounds']}")
    if spec["method"] in METHOD_MODELS and spec["model"] not in METHOD_MODELS[spec["method"]]:
        raise SpecError(f"model = {spec['model']!r} does not fit method = {spec['method']!r}: "
                        "expected " + " or ".join(map(repr, METHOD_MODELS[spec["method"]])))
    dp_on = spec["privacy.clip_norm"] > 0
    if dp_on and spec["method"] not in DP_UPLOADS:
        raise SpecError(f"privacy.clip_norm = {spec['privacy.clip_norm']}: method = "
                        f"{spec['method']!r} does not support differential privacy (it shares "
                        "statistics that are not privatised): expected privacy.clip_norm = 0, "
                        "or method one of " + ", ".join(repr(m) for m in DP_UPLOADS))
    if dp_on and spec["method"] == "fedrecgel" and spec["fedrecgel.item_centric"]:
        raise SpecError(f"fedrecgel.item_centric = true with privacy.clip_norm = "
                        f"{spec['privacy.clip_norm']}: item-centric aggregation needs the item "
                        "rows each client touched, which DP mode hides (every client uploads "
                        "every row): expected fedrecgel.item_centric = false")
    if dp_on and spec["method"] == "fedrecgel" and spec["fedrecgel.eisam"]:
        raise SpecError(f"fedrecgel.eisam = true with privacy.clip_norm = "
                        f"{spec['privacy.clip_norm']}: "
                        "the item counts each client reports for the EISAM weights are not "
                        "privatised: expected fedrecgel.eisam = false")
    if spec["partition.low"] > spec["partition.high"]:
        raise SpecError(f"partition.low = {spec['partition.low']} > partition.high = "
                        f"{spec['partition.high']}: expected low <= high")


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested TOML tables -> dotted keys (the same rule as Flower's run config)."""
    flat: dict[str, Any] = {}
    for name, value in tree.items():
        full = f"{prefix}{name}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, full + "."))
        else:
            flat[full] = value
    return flat


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a spec TOML file into flat overrides (not yet checked)."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            return flatten(tomllib.load(handle))
    except FileNotFoundError:
        raise SpecError(f"spec file {path} does not exist") from None
    except IsADirectoryError:
        hint = (f"; to continue the run in it: fedsim run --resume {path}"
                if (path / "config.toml").is_file() else "")
        raise SpecError(f"spec file {path} is a directory, not a TOML file{hint}") from None
    except tomllib.TOMLDecodeError as err:
        raise SpecError(f"spec file {path} is not valid TOML: {err}") from None


def parse_set(assignments: list[str]) -> dict[str, Any]:
    """``--set key=value`` pairs -> flat overrides; values use TOML syntax, bare words are text."""
    overrides: dict[str, Any] = {}
    for item in assignments:
        name, sep, raw = item.partition("=")
        if not sep or not name.strip():
            raise SpecError(f"--set {item!r}: expected key=value, e.g. --set fedncf.server_lr=0.01")
        try:
            value = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw.strip()
        overrides[name.strip()] = value
    return overrides


def to_toml(spec: Mapping[str, Any]) -> str:
    """Write a resolved spec back as TOML (top-level keys first, then one table per prefix)."""
    top = {k: v for k, v in spec.items() if "." not in k}
    tables: dict[str, dict[str, Any]] = {}
    for name, value in spec.items():
        if "." in name:
            table, _, leaf = name.rpartition(".")
            tables.setdefault(table, {})[leaf] = value
    lines = [f"{k} = {json.dumps(v) if not isinstance(v, bool) else str(v).lower()}"
             for k, v in top.items()]
    for table, values in tables.items():
        lines += ["", f"[{table}]"]
        lines += [f"{k} = {json.dumps(v) if not isinstance(v, bool) else str(v).lower()}"
                  for k, v in values.items()]
    return "\n".join(lines) + "\n"


def tables() -> list[str]:
    """The spec's tables (the part of a key before the dot), in schema order."""
    return list(dict.fromkeys(name.rpartition(".")[0] for name in SCHEMA if "." in name))


def markdown_reference(table: str | None = None) -> str:
    """The key reference written to docs/spec.md; with `table`, only that table's keys (a
    heading and the rows, for ``fedsim keys TABLE``)."""
    if table is not None and table not in tables():
        raise SpecError(f"no spec table {table!r}: expected one of {', '.join(tables())}")
    rows = ["| key | default | allowed | meaning |", "|---|---|---|---|"]
    for name, key in SCHEMA.items():
        if table is None or name.startswith(table + "."):
            rows.append(f"| `{name}` | `{key.default!r}` | {key.allowed()} | {key.doc} |")
    if table is not None:
        return f"# [{table}] keys\n\n" + "\n".join(rows) + "\n"
    return ("# Experiment spec keys\n\nGenerated from `fedsim/spec.py` by `python -m fedsim.spec`; "
            "do not edit by hand.\nA spec TOML sets any of these; tables are the part before the "
            "dot (`[fedncf] server_lr = 0.01`).\n\n" + "\n".join(rows) + "\n")


if __name__ == "__main__":
    print(markdown_reference(), end="")
