"""EISAM: the weights, E1 and E2 against independent arithmetic, rho = 0 equals plain SASRec bit
for bit, SASRec's sequences and scoring, a short real run, and the FedRecGEL client option."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clients.fedrecgel import FedRecGELClient
from fedsim.centralized.eisam import EISAMTrainer
from fedsim.centralized.sasrec import SASRecTrainer, training_windows
from fedsim.federation import load_federation
from fedsim.optim import (frequency_weights, item_row_penalty, sam_gradient,
                          weighted_sam_gradient)
from fedsim.protocol import unpack_arrays
from fedsim.spec import SpecError, resolve
from tests.helpers import run_fake

# A small SASRec on the synthetic set (its timestamps are random: these tests check exactness).
SEQ = {"method": "eisam", "model": "sasrec", "dataset": "synthetic-rec", "partitioner": "single",
       "fraction": 1.0, "nodes": 1, "rounds": 2, "central.batch_size": 64, "central.dim": 16,
       "sasrec.max_len": 12, "eisam.rho": 0.05}
# FedRecGEL on the synthetic set, 10 users per client (50 clients) to keep evaluation cheap; one
# client at a time (cohort mode is bit-exact only to float tolerance, and EISAM clients run alone).
REC = {"dataset": "synthetic-rec", "rounds": 2, "fraction": 0.2, "eval_every": 2, "nodes": 4,
       "partition.ids_per_client": 10, "method": "fedrecgel", "cohort": False}


@pytest.fixture(autouse=True)
def one_thread():
    """These models are small: one torch thread is faster, and on a busy machine far faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _strip(history):
    """Round records without their timings."""
    return [{k: v for k, v in r.items() if not k.endswith("_seconds")} for r in history]


def test_frequency_weights_decrease_with_count_and_have_mean_one():
    counts = np.array([0, 1, 2, 5, 40, 100, 100])
    beta = frequency_weights(counts, alpha=1.0, beta_max=10.0)
    seen = counts > 0
    mean_n = counts[seen].mean()  # 41.33
    raw = np.minimum(10.0, mean_n / counts[seen])  # 10, 10 (both capped), 8.27, 1.03, .41, .41
    np.testing.assert_allclose(beta[seen], raw / raw.mean())
    assert beta[seen].mean() == pytest.approx(1.0)
    assert np.all(np.diff(beta[seen]) <= 0) and beta[5] < beta[4] < beta[3] < beta[2] == beta[1]
    assert beta[0] == beta[1]  # never-trained items get the cap
    np.testing.assert_allclose(frequency_weights(counts, 0.0, 10.0)[seen], 1.0)
    with pytest.raises(ValueError, match="every count is 0"):
        frequency_weights(np.zeros(3), 1.0, 10.0)


def test_weighted_sam_gradient_equals_a_hand_computed_two_pass_step():
    # Weighted least squares; gradients written out by hand (no autograd, no fedsim.optim).
    x = torch.tensor([[1.0, 2.0], [0.5, -1.0], [3.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
    y = torch.tensor([1.0, 0.0, 2.0, -1.0], dtype=torch.float64)
    beta = torch.tensor([0.2, 3.0, 0.5, 1.3], dtype=torch.float64)
    w = torch.tensor([0.3, -0.2], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([0.1], dtype=torch.float64, requires_grad=True)
    weighted_fn = lambda: (beta * (x @ w + b - y) ** 2).mean()

    def hand_grad(w_, b_, weights):
        r = weights * (x @ w_ + b_ - y).numpy()
        return 2 * x.numpy().T @ r / 4, np.array([2 * r.mean()])

    rho, ones = 0.05, np.ones(4)
    g = hand_grad(w.detach(), b.detach(), ones)
    gw = hand_grad(w.detach(), b.detach(), beta.numpy())
    norm = np.sqrt((gw[0] ** 2).sum() + (gw[1] ** 2).sum())
    g2 = hand_grad(w.detach() + torch.from_numpy(rho * gw[0] / norm),
                   b.detach() + torch.from_numpy(rho * gw[1] / norm), beta.numpy())
    expected = [g[k] + g2[k] - gw[k] for k in range(2)]
    plain = [torch.from_numpy(a) for a in g]
    for given in (None, [torch.from_numpy(a) for a in gw]):  # own pass, or the caller's
        got = weighted_sam_gradient(weighted_fn, [w, b], plain, rho, weighted_grads=given)
        for value, reference in zip(got, expected):
            np.testing.assert_allclose(value.numpy(), reference, rtol=1e-12)
    assert w.tolist() == [0.3, -0.2] and b.tolist() == [0.1]  # restored exactly
    # All weights 1: SAM's gradient (the weighted and plain losses coincide).
    plain_fn = lambda: ((x @ w + b - y) ** 2).mean()
    for e1, sam in zip(weighted_sam_gradient(plain_fn, [w, b], plain, rho),
                       sam_gradient(plain_fn, [w, b], plain, rho)):
        np.testing.assert_allclose(e1.numpy(), sam.numpy(), rtol=1e-12)
    # rho = 0: the plain gradient itself, no pass.
    calls = []
    assert all(a is p for a, p in zip(weighted_sam_gradient(lambda: calls.append(1), [w, b],
                                                            plain, 0.0), plain))
    assert not calls


def test_item_row_penalty_equals_its_definition_through_autograd():
    # rho * sum_i pi_i beta_i ||dL_i/dw_i||, L_i = mean CE of item i's samples, taken by autograd
    # through logits = h W^T with W a leaf; also the penalty's gradient w.r.t. h.
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(7, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    table = torch.randn(5, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([2, 0, 2, 4, 2, 0, 1])
    beta = torch.tensor([0.5, 2.0, 1.5, 9.0, 0.25], dtype=torch.float64)
    rho = 0.1

    reference = h.new_zeros(())
    for item in targets.unique():
        mine = targets == item
        loss_i = F.cross_entropy(h[mine] @ table.T, targets[mine])
        row = torch.autograd.grad(loss_i, table, create_graph=True)[0][item]
        reference = reference + rho * (mine.sum().item() / len(targets)) * beta[item] * row.norm()

    losses = F.cross_entropy(h @ table.T, targets, reduction="none")
    got = item_row_penalty(h, torch.exp(-losses), targets, beta, rho)
    assert got.item() == pytest.approx(reference.item(), rel=1e-12)
    (grad_got,) = torch.autograd.grad(got, h)
    (grad_ref,) = torch.autograd.grad(reference, h)
    np.testing.assert_allclose(grad_got.numpy(), grad_ref.numpy(), rtol=1e-10, atol=1e-12)


def _trained(trainer_class, overrides, epochs=2):
    spec = resolve({**SEQ, **overrides})
    federation = load_federation(spec)
    trainer = trainer_class(spec, federation.dataset, federation.train_parts[0])
    torch.manual_seed(3)
    model = trainer.build_model()
    optimizer = trainer.make_optimizer(model)
    losses = []
    for epoch in range(epochs):
        torch.manual_seed(epoch)
        losses.append(trainer.train_epoch(model, optimizer, np.random.default_rng(epoch)))
    return model, losses


@pytest.mark.parametrize("mode", ["e1", "e2"])
def test_rho_zero_is_plain_sasrec_bit_for_bit(mode):
    plain, plain_losses = _trained(SASRecTrainer, {"method": "sasrec"})
    zero, zero_losses = _trained(EISAMTrainer, {"eisam.mode": mode, "eisam.rho": 0.0})
    moved, _ = _trained(EISAMTrainer, {"eisam.mode": mode})
    assert plain_losses == zero_losses
    for (name, p), z, m in zip(plain.state_dict().items(), zero.state_dict().values(),
                               moved.state_dict().values()):
        assert torch.equal(p, z), name
    assert not all(torch.equal(p, m) for p, m in zip(plain.parameters(), moved.parameters()))


@pytest.mark.slow
def test_rho_zero_run_equals_the_sasrec_run_through_the_pipeline():
    """The pipeline's eisam runs are SASRec's at rho = 0 and differ from them at rho > 0 (both
    modes: the spec's radius reaches the clients' steps)."""
    sasrec, sasrec_history, _ = run_fake({**SEQ, "method": "sasrec"})
    eisam, eisam_history, _ = run_fake({**SEQ, "eisam.rho": 0.0})
    assert _strip(sasrec_history) == _strip(eisam_history)
    assert sasrec_history[-1]["train_loss"] > 0 and "val_ndcg@10_full_tail" in sasrec_history[-1]
    for mode in ("e1", "e2"):
        _, history, _ = run_fake({**SEQ, "eisam.mode": mode})
        assert history[-1]["train_loss"] != sasrec_history[-1]["train_loss"], mode


def test_e1_step_is_the_briefs_two_pass_update():
    # One E1 step of the trainer against the brief's loop written with plain autograd
    # (dropout 0, so both passes see the same network).
    spec = resolve({**SEQ, "sasrec.dropout": 0.0, "eisam.rho": 0.5})
    federation = load_federation(spec)
    trainer = EISAMTrainer(spec, federation.dataset, federation.train_parts[0])
    torch.manual_seed(0)
    model = trainer.build_model()
    reference = trainer.build_model()
    reference.load_state_dict(model.state_dict())
    inputs, targets = (torch.from_numpy(a[:32]) for a in (trainer.inputs, trainer.targets))

    params = list(reference.parameters())
    at = targets > 0
    items = targets[at] - 1

    def losses():
        hidden = reference.hidden(inputs)[at]
        return F.cross_entropy(hidden @ reference.item.weight[1:].T, items, reduction="none")

    beta = trainer.beta[items]
    g = torch.autograd.grad(losses().mean(), params)
    gw = torch.autograd.grad((beta * losses()).mean(), params)
    norm = torch.sqrt(sum((x ** 2).sum() for x in gw))
    with torch.no_grad():
        for p, x in zip(params, gw):
            p.add_(0.5 * x / norm)
    g2 = torch.autograd.grad((beta * losses()).mean(), params)
    expected = [a + b - c for a, b, c in zip(g, g2, gw)]

    # Plain SGD shows the step's gradient directly (Adam would blow up the rounding noise of
    # gradients that are zero in exact arithmetic, such as the attention's key bias).
    before = [p.detach().clone() for p in model.parameters()]
    trainer.step(model, torch.optim.SGD(model.parameters(), lr=1.0), inputs, targets)
    names = [name for name, _ in model.named_parameters()]
    for name, old, new, want in zip(names, before, model.parameters(), expected):
        torch.testing.assert_close(old - new.detach(), want, rtol=1e-4, atol=1e-6, msg=name)


def test_training_windows_make_every_later_item_a_target_once():
    sequences = [np.array([7]), np.array([4, 5, 6]), np.arange(10, 17)]
    inputs, targets = training_windows(sequences, max_len=3)
    # 7: no target; [4, 5, 6]: one window; 10..16 (7 items): windows [13..16], [10..13].
    assert inputs.tolist() == [[0, 5, 6], [14, 15, 16], [11, 12, 13]]
    assert targets.tolist() == [[0, 6, 7], [15, 16, 17], [12, 13, 14]]
    assert sorted(targets[targets > 0] - 1) == [5, 6, *range(11, 17)]


def test_sasrec_is_causal_and_scores_the_test_item_after_the_validation_item():
    spec = resolve({**SEQ, "method": "sasrec"})
    federation = load_federation(spec)
    data = federation.dataset
    trainer = SASRecTrainer(spec, data, federation.train_parts[0])
    torch.manual_seed(0)
    model = trainer.build_model().eval()
    with torch.no_grad():
        sequence = torch.tensor([[0, 0, 3, 9, 4, 8]])
        changed = sequence.clone()
        changed[0, -1] = 20
        a, b = model.hidden(sequence), model.hidden(changed)
        assert torch.equal(a[:, :-1], b[:, :-1]) and not torch.equal(a[:, -1], b[:, -1])
        users = np.array([0, 5])
        test, val = trainer.score(model, users), trainer.score_validation(model, users)
        history = np.append(data.user_sequence(5), data.val_items[5])[-spec["sasrec.max_len"]:]
        expected = model.hidden(torch.from_numpy(history + 1)[None])[0, -1] @ model.item_table().T
        torch.testing.assert_close(test[1], expected)
        expected = (model.hidden(torch.from_numpy(data.user_sequence(5)[-12:] + 1)[None])[0, -1]
                    @ model.item_table().T)
        torch.testing.assert_close(val[1], expected)


def test_sasrec_and_eisam_need_the_sasrec_backbone():
    with pytest.raises(SpecError, match="'sasrec'"):
        resolve({**SEQ, "model": "neumf"})
    with pytest.raises(SpecError, match="eisam.mode"):
        resolve({**SEQ, "eisam.mode": "e3"})


# The weighting puts EISAM's sharpness term on the tail. One batch of ML-100K windows, dropout 0,
# plain SGD (lr 1): the trainer's step minus plain SASRec's step from the same model is the
# sharpness part of the step (E1: grad L_beta(theta + eps) - grad L_beta(theta); E2: the
# penalty's gradient). Its share of squared norm on the item rows of tail items (all but the top
# 20% by training count) against the same step with alpha = 0 (every beta 1: plain SAM's
# sharpness term for E1, an unweighted penalty for E2). Measured: E1 0.20 -> 0.55, E2 0.13 ->
# 0.28; E1's perturbation itself 0.27 -> 0.82.
MOVIELENS_STEP = {**SEQ, "dataset": "movielens-100k", "central.dim": 32, "sasrec.max_len": 50,
                  "sasrec.dropout": 0.0}


def _tail_share(rows: torch.Tensor, tail: torch.Tensor) -> float:
    squares = (rows.double() ** 2).sum(1)
    return float(squares[tail].sum() / squares.sum())


def _sharpness_step(mode, alpha):
    """(tail share of the sharpness part of one step on the item rows, of E1's perturbation of
    the item rows, the trainer)."""
    spec = resolve({**MOVIELENS_STEP, "eisam.mode": mode, "eisam.alpha": alpha})
    federation = load_federation(spec)
    trainer = EISAMTrainer(spec, federation.dataset, federation.train_parts[0])
    tail = torch.from_numpy(~federation.dataset.head_item_mask(0.2))
    inputs, targets = (torch.from_numpy(a[:256]) for a in (trainer.inputs, trainer.targets))
    torch.manual_seed(0)
    model, plain = trainer.build_model(), trainer.build_model()
    plain.load_state_dict(model.state_dict())
    points = []  # the item rows at every loss evaluation of the step: E1's second is perturbed
    losses = trainer.sample_losses
    trainer.sample_losses = lambda m, i, t: (points.append(m.item.weight.detach()[1:].clone()),
                                             losses(m, i, t))[1]
    trainer.step(model, torch.optim.SGD(model.parameters(), lr=1.0), inputs, targets)
    del trainer.sample_losses
    SASRecTrainer.step(trainer, plain, torch.optim.SGD(plain.parameters(), lr=1.0), inputs,
                       targets)
    sharpness = plain.item.weight.detach()[1:] - model.item.weight.detach()[1:]
    perturbation = points[1] - points[0] if mode == "e1" else None
    return (_tail_share(sharpness, tail),
            None if perturbation is None else _tail_share(perturbation, tail), trainer)


@pytest.mark.parametrize("mode", ["e1", "e2"])
@pytest.mark.slow
def test_item_weights_put_the_sharpness_term_on_the_tail(mode, data_dir):
    unit_share, unit_eps, _ = _sharpness_step(mode, alpha=0.0)
    share, eps, trainer = _sharpness_step(mode, alpha=1.0)
    assert share > 1.8 * unit_share, (share, unit_share)
    if mode == "e1":  # the ascent direction itself: tail items dominate it
        assert eps > 0.6 > 2 * unit_eps, (eps, unit_eps)
    # beta: the weight function of this client's training counts, larger on the tail.
    data = trainer.data
    counts = np.bincount(np.concatenate([data.user_items(int(u)) for u in trainer.users]),
                         minlength=data.num_items)
    np.testing.assert_allclose(trainer.beta.numpy(), frequency_weights(counts, 1.0, 10.0),
                               rtol=1e-6)
    head = data.head_item_mask(0.2)
    assert trainer.beta[~head].mean() > 3 * trainer.beta[head].mean()


# --- the federated client option (FedRecGEL + EISAM's E1) -------------------------------------

def test_fedrecgel_eisam_with_rho_zero_is_fedrecgel():
    off, off_history, _ = run_fake({**REC, "fedrecgel.rho_sh": 0.0})
    on, on_history, _ = run_fake({**REC, "fedrecgel.rho_sh": 0.0, "fedrecgel.eisam": True})
    for name, value in off.params.items():
        assert torch.equal(value, on.params[name]), name
    metrics = lambda h: [{k: v for k, v in r.items() if "bytes" not in k} for r in _strip(h)]
    assert metrics(off_history) == metrics(on_history)


@pytest.mark.slow
def test_fedrecgel_eisam_with_unit_weights_is_fedrecgel_sam():
    # alpha = 0: every beta = 1, so E1's g + g~ - g is SAM's g~ up to rounding.
    sam, _, _ = run_fake(REC)
    unit, _, _ = run_fake({**REC, "fedrecgel.eisam": True, "eisam.alpha": 0.0})
    weighted, _, _ = run_fake({**REC, "fedrecgel.eisam": True})
    for name, value in sam.params.items():
        torch.testing.assert_close(unit.params[name], value, rtol=0, atol=1e-6)
    assert not all(torch.equal(sam.params[n], weighted.params[n]) for n in sam.params)


def test_fedrecgel_eisam_sends_weights_of_the_pooled_counts():
    strategy, _, grid = run_fake({**REC, "fedrecgel.eisam": True})
    spec = resolve({**REC, "fedrecgel.eisam": True})
    data = load_federation(spec).dataset
    expected = frequency_weights(data.item_train_counts(), spec["eisam.alpha"],
                                 spec["eisam.beta_max"]).astype(np.float32)
    np.testing.assert_array_equal(strategy.item_beta, expected)
    kinds = [m.metadata.message_type for m in grid.sent]
    assert kinds.count("query.counts") == 4  # once, to every node
    train = [m for m in grid.sent if m.metadata.message_type == "train"]
    checked = 0
    for message in train:
        for own in unpack_arrays(message.content.array_records["client-arrays"]).values():
            np.testing.assert_array_equal(own["item_beta"], expected[own["item_ids"]])
            checked += 1
    assert checked == 2 * 10  # every trained client (0.2 of 50), both rounds


def test_client_weights_each_block_by_its_positive():
    spec = resolve({**REC, "fedrecgel.eisam": True})
    client = FedRecGELClient(spec, 3)
    users, items, labels = client.round_sample(1)
    item_ids = np.unique(items)
    beta = np.arange(len(item_ids), dtype=np.float32) + 1.0
    weights = client.sample_weights(item_ids, beta, 1)
    block = spec["fedncf.train_negatives"] + 1
    positives = items[labels == 1]
    assert np.array_equal(items[::block], positives)
    np.testing.assert_array_equal(weights[::block], beta[np.searchsorted(item_ids, positives)])
    assert np.all(weights.reshape(-1, block) == weights[::block, None])
    counts = client.item_counts()
    assert counts.sum() == sum(len(client.data.user_items(int(u))) for u in client.users)


def test_fedrecgel_eisam_refuses_dp():
    with pytest.raises(SpecError, match="fedrecgel.eisam"):
        resolve({**REC, "fedrecgel.eisam": True, "privacy.clip_norm": 1.0})
