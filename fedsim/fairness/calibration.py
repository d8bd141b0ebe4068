"""FedFACT's calibration math: constraint matrices, cost matrix, dual projection, dual objective.

Pure functions, no Flower, in the style of fairlearn's reductions (FedFACT brief §1.3, §2.1,
§2.3). Everything a client needs is computed from two count tables of shape [groups, classes]:
its own counts n_k[a, y] and the pooled counts N[a, y] = Σ_k n_k[a, y] of the whole federation
(shared once, see :mod:`strategies.fedfact`). Probabilities are count ratios over the pooled
total n = Σ N, so p_{a,k} = n_k[a].sum() / n and p_{a,y} = N[a, y] / n (brief §1.1).

Constraints are in the group-vs-population form of brief §1.3: one per (kind, group a', class y),
where kind is "sel" (P(Ŷ=y | A=a') − P(Ŷ=y), DP), "tpr" (P(Ŷ=y | Y=y, A=a') − P(Ŷ=y | Y=y),
EOP) or "fpr" (P(Ŷ=y | Y≠y, A=a') − P(Ŷ=y | Y≠y); EO = tpr + fpr). Each is a rate conditioned
on an event E on Y, so all three come from one rule: D^{a,k}_{a',y} is zero except at the rows
of E in column y, where it equals (global)
    p_{a',k} / p_{a',E} · 1[a=a'] − p_{a,k} / p_E
and (local, client k)
    p_{a',k} / p_{a',E,k} · 1[a=a'] − p_{a,k} / p_{E,k}.
For E = all rows this is App. A.2's DP matrix (p_{k|a'} 1[a=a'] − p_{a,k}; 1[a=a'] − p_{a|k}),
for E = {y} its EOP entry, for E = {≠y} its EO/FPR column. A constraint whose conditioning cell
is empty (e.g. a client without group a') has no rate; its matrix is zero (ours).

Constraint values: with C^{a,k}[i, j] = P(Y=i, Ŷ=j | A=a, K=k), the global disparity is
Σ_k Σ_a ⟨D_g^{a,k}, C^{a,k}⟩ (client k's share: :func:`disparities`), the local one at client k
is Σ_a ⟨D_l^{a,k}, C^{a,k}⟩.

Duals are non-negative pairs, shape [2, U]: row 0 prices "D − ξ ≤ 0", row 1 "−D − ξ ≤ 0"; the
signed dual is row 0 − row 1. The cost matrix uses "+" before the local term (brief §2.1: the
paper prints "−"; the Lagrangian R + Σ Λ D^g + Σ Μ D^k gives "+").
"""

from __future__ import annotations

import numpy as np
import torch

CRITERIA = {"dp": ("sel",), "eop": ("tpr",), "eo": ("tpr", "fpr")}


def _rows(kind: str, y: int, num_classes: int) -> np.ndarray:
    """Rows (true classes) of the event E that the rate of `kind` for class y conditions on."""
    one_hot = np.eye(num_classes)[y]
    return {"sel": np.ones(num_classes), "tpr": one_hot, "fpr": 1.0 - one_hot}[kind]


def _ratio(numerator: np.ndarray | float, denominator: np.ndarray | float) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (an empty cell has no constraint)."""
    numerator, denominator = np.broadcast_arrays(np.asarray(numerator, float),
                                                 np.asarray(denominator, float))
    out = np.zeros(numerator.shape)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _constraints(groups: int, classes: int, criterion: str):
    """(a', y, rows of E) of every constraint u, in the order u enumerates (kind, a', y)."""
    for kind in CRITERIA[criterion]:
        for a_prime in range(groups):
            for y in range(classes):
                yield a_prime, y, _rows(kind, y, classes)


def constraint_matrices(own: np.ndarray, pooled: np.ndarray, criterion: str
                        ) -> tuple[np.ndarray, np.ndarray]:
    """(D_global, D_local) of one client, each [U, groups, classes, classes].

    `own` = n_k[a, y], `pooled` = N[a, y]. Constraint u enumerates (kind, a', y) in that order
    (kinds of :data:`CRITERIA`). Counts are used directly: the 1/n of every probability cancels.
    """
    own, pooled = np.asarray(own, float), np.asarray(pooled, float)
    groups, classes = own.shape
    own_group = own.sum(1)  # n_{a,k}
    blocks_g, blocks_l = [], []
    for a_prime, y, rows in _constraints(groups, classes, criterion):
        pick = np.eye(groups)[a_prime]  # 1[a = a']
        coef_g = (_ratio(own_group[a_prime], pooled[a_prime] @ rows) * pick
                  - _ratio(own_group, (pooled @ rows).sum()))
        coef_l = (_ratio(own_group[a_prime], own[a_prime] @ rows) * pick
                  - _ratio(own_group, (own @ rows).sum()))
        column = np.zeros((classes, classes))
        column[:, y] = rows
        blocks_g.append(coef_g[:, None, None] * column)
        blocks_l.append(coef_l[:, None, None] * column)
    return np.stack(blocks_g), np.stack(blocks_l)


def cell_shares(counts: np.ndarray, criterion: str) -> np.ndarray:
    """P(A=a', Y∈E) within `counts` for every constraint u: [U].

    The rate of constraint u reacts to its dual ∝ 1 / this share (its group's offset in M is
    divided by it), so it is the natural diagonal preconditioner of a dual step (ours).
    """
    counts = np.asarray(counts, float)
    return np.array([counts[a_prime] @ rows for a_prime, _, rows
                     in _constraints(*counts.shape, criterion)]) / counts.sum()


def disparities(matrices: np.ndarray, confusion: np.ndarray) -> np.ndarray:
    """Σ_a ⟨D_u^{a,k}, C^{a,k}⟩ for every u: [U], from counts confusion[a, i, j] of client k.

    C^{a,k} is the confusion normalised within group a at client k (empty groups contribute 0).
    With global matrices this is client k's share of the global disparity (sum over clients =
    the global disparity); with local matrices it is client k's local disparity.
    """
    confusion = np.asarray(confusion, float)
    rates = _ratio(confusion, confusion.sum((1, 2), keepdims=True))
    return np.einsum("uaij,aij->u", matrices, rates)


def signed(duals: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """Λ_u = λ⁽¹⁾_u − λ⁽²⁾_u from the non-negative pair array [2, U]."""
    return duals[0] - duals[1]


def cost_matrix(lam: torch.Tensor, mu: torch.Tensor, d_global: torch.Tensor,
                d_local: torch.Tensor, group_share: torch.Tensor) -> torch.Tensor:
    """M(a, k) for every group a of one client: [groups, classes, classes] (brief §2.1).

    M(a,k) = I − (1/p_{a,k}) [Σ_u Λ_u D_g^{a,k}_u + Σ_u Μ_{k,u} D_l^{a,k}_u], with `lam`, `mu`
    the dual pairs [2, U] and `group_share` = p_{a,k} [groups]. A group the client does not
    hold (p_{a,k} = 0) gets M = I.
    """
    classes = d_global.shape[-1]
    weighted = (torch.einsum("u,uaij->aij", signed(lam), d_global)
                + torch.einsum("u,uaij->aij", signed(mu), d_local))
    inverse = torch.where(group_share > 0, 1.0 / group_share.clamp_min(1e-300),
                          torch.zeros_like(group_share))
    return torch.eye(classes, dtype=weighted.dtype) - inverse[:, None, None] * weighted


def calibrated_scores(eta: torch.Tensor, groups: torch.Tensor, cost: torch.Tensor
                      ) -> torch.Tensor:
    """(M(a_i, k)ᵀ η(x_i))_j for every row i: [n, classes]; its argmax is the fair classifier.

    Thm. 5 (attribute-aware post-processing), brief §2.1.
    """
    # Scores under every group's matrix, then the row's own group: dense ops, cheap backward.
    under_each = torch.einsum("ni,aij->naj", eta, cost)
    own_group = torch.nn.functional.one_hot(groups, cost.shape[0]).to(eta.dtype)
    return torch.einsum("naj,na->nj", under_each, own_group)


SMOOTHINGS = ("softmax", "logsumexp")


def smoothed_max(z: torch.Tensor, beta: float, smoothing: str = "softmax") -> torch.Tensor:
    """A smooth max of each row of z, exact as β → 0.

    "softmax": σ_β(z) = Σ_j softmax(z/β)_j z_j (the paper's, brief §2.3), a lower bound of the
    max. "logsumexp": β log Σ_j exp(z_j / β) (the authors' OptFair code), an upper bound, whose
    gradient in z is softmax(z/β): the prediction probabilities of the randomised classifier
    :func:`prediction_probabilities` gives. So the gradient of the dual objective in a dual is
    minus that classifier's (plug-in) disparity plus ξ, and at a stationary point of the duals
    that classifier meets the constraints exactly on the rows the objective averages over.
    σ_β's gradient weights softmax(z/β)_j (1 + (z_j − σ_β)/β) are not a distribution over
    classes: no classifier's disparity is priced, and the hard argmax overshoots.
    """
    if smoothing == "softmax":
        return (torch.softmax(z / beta, dim=-1) * z).sum(-1)
    if smoothing == "logsumexp":
        return beta * torch.logsumexp(z / beta, dim=-1)
    raise ValueError(f"smoothing = {smoothing!r}: expected one of {SMOOTHINGS}")


def prediction_probabilities(scores: torch.Tensor, beta: float, smoothing: str = "softmax"
                             ) -> torch.Tensor:
    """P(Ŷ = j | row) of the calibrated classifier from its scores (Mᵀη)_j: [n, classes].

    "softmax": the paper's deterministic h_k = argmax_j (one-hot; ties to the lowest class);
    "logsumexp": OptFair's randomised classifier, softmax(scores / β).
    """
    if smoothing == "logsumexp":
        return torch.softmax(scores / beta, dim=-1)
    if smoothing == "softmax":
        return torch.nn.functional.one_hot(scores.argmax(-1), scores.shape[-1]).to(scores.dtype)
    raise ValueError(f"smoothing = {smoothing!r}: expected one of {SMOOTHINGS}")


def client_objective(lam: torch.Tensor, mu: torch.Tensor, eta: torch.Tensor,
                     groups: torch.Tensor, d_global: torch.Tensor, d_local: torch.Tensor,
                     group_share: torch.Tensor, client_share: float, xi_global: float,
                     xi_local: float, beta: float, smoothing: str = "softmax") -> torch.Tensor:
    """Ĥ'_k(λ, μ_k) of brief §2.3: mean σ_β(Mᵀη) + ξ_g‖λ‖₁ + (ξ_l / p_k)‖μ_k‖₁.

    σ_β is :func:`smoothed_max` with `smoothing` ("softmax": the paper's; "logsumexp": OptFair's).

    Σ_k p_k Ĥ'_k is the smoothed empirical dual objective; its gradient in λ is minus the
    (smoothed, plug-in) disparity plus ξ, so descending it raises the dual of a violated
    constraint. Duals are non-negative, so ‖·‖₁ is their sum.
    """
    cost = cost_matrix(lam, mu, d_global, d_local, group_share)
    data_term = smoothed_max(calibrated_scores(eta, groups, cost), beta, smoothing).mean()
    return data_term + xi_global * lam.sum() + xi_local / client_share * mu.sum()


def project_l1_ball(v: np.ndarray, radius: float) -> np.ndarray:
    """Euclidean projection onto {x ≥ 0, ‖x‖₁ ≤ radius} (the dual sets Λ, 𝓜 of brief §2.1).

    Clip at 0; if the sum still exceeds the radius, project onto the simplex of that radius
    (sort-based, Duchi et al. 2008): x = max(v − θ, 0) with the θ that makes the sum = radius.
    """
    v = np.asarray(v, float)
    clipped = np.maximum(v, 0.0)
    if clipped.sum() <= radius:
        return clipped
    flat = np.sort(clipped.ravel())[::-1]
    cumulative = np.cumsum(flat) - radius
    index = np.arange(1, flat.size + 1)
    last = np.nonzero(flat - cumulative / index > 0)[0][-1]
    theta = cumulative[last] / (last + 1)
    return np.maximum(v - theta, 0.0)


def group_prior_shift(log_scores: np.ndarray, groups: np.ndarray, counts: np.ndarray,
                      iterations: int = 100) -> np.ndarray:
    """Per-group class offsets b[a, y] so that softmax(log η̂ + b_a) matches group a's label rates.

    Thm. 5 needs η(x, a, k) = P(Y | x, A=a, K=k); a FedAvg model gives one attribute-blind score
    for all groups and clients, so plug-in TPRs (EOP, EO) are biased where base rates differ by
    group (DP does not use labels). This is the EM prior-shift correction of Saerens et al.
    (2002) per group on the client's own rows (ours; LoGoFair fits a Beta calibration per group
    instead). `counts` = n_k[a, y], smoothed by one row per class; groups without rows get 0.
    """
    log_scores = np.asarray(log_scores, float)
    counts = np.asarray(counts, float)
    target = (counts + 1.0) / (counts.sum(1, keepdims=True) + counts.shape[1])
    offsets = np.zeros(counts.shape)
    for a in np.unique(groups):
        rows = log_scores[groups == a]
        for _ in range(iterations):
            shifted = rows + offsets[a]
            probs = np.exp(shifted - shifted.max(1, keepdims=True))
            probs /= probs.sum(1, keepdims=True)
            offsets[a] += np.log(target[a] / probs.mean(0))
    return offsets
