"""FedFACT (../shared/research/fedfact.md): federated group-fairness calibration under global and
local constraints, post-processing (fedfact_post: FedAvg pre-training, then dual rounds) and
in-processing (fedfact_in). Clients: clients/fedfact.py, clients/fedfact_in.py; servers:
strategies/fedfact.py, strategies/fedfact_in.py. The group/label counts and dual gradients they
share are not privatised, so neither supports DP."""

from __future__ import annotations

from fedsim.keys import Key, SpecError
from fedsim.method import Method, classifier_arrays, strategy_arguments

KEYS = {
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
}


def _shared(spec):
    """Arguments of both FedFACT strategies."""
    return {name: spec[f"fedfact.{name}"] for name in ("variant", "criterion", "dual_lr", "bound")}


def _build_post(spec, federation, runtime):
    from strategies.fedfact import FedFACTPost

    return FedFACTPost(pretrain_rounds=spec["fedfact.pretrain_rounds"],
                       dual_step=spec["fedfact.dual_step"], **_shared(spec),
                       **strategy_arguments(spec, federation, runtime))


def _build_in(spec, federation, runtime):
    from strategies.fedfact_in import FedFACTIn

    return FedFACTIn(xi_global=spec["fedfact.xi_global"], **_shared(spec),
                     **strategy_arguments(spec, federation, runtime))


def _check_post(spec):
    if spec["fedfact.pretrain_rounds"] >= spec["rounds"]:
        raise SpecError(f"fedfact.pretrain_rounds = {spec['fedfact.pretrain_rounds']} leaves no "
                        f"post-processing round: expected < rounds = {spec['rounds']}")


METHODS = (
    Method(name="fedfact_post", task="classification",
           client="clients.fedfact:FedFACTPostClient", build=_build_post,
           initial_arrays=classifier_arrays, headline="accuracy", check=_check_post),
    Method(name="fedfact_in", task="classification",
           client="clients.fedfact_in:FedFACTInClient", build=_build_in,
           initial_arrays=classifier_arrays, headline="accuracy"),
)
