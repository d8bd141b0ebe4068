"""FedRecGEL: SAM helpers against independent arithmetic, rho = 0 equals FedNCF, item-centric
aggregation, privacy, and short runs of FedRecGEL and the FedMF baseline."""

import numpy as np
import pytest
import torch

from fedsim.optim import perturbation, rowwise_perturbation, sam_gradient
from fedsim.protocol import unpack_arrays
from fedsim.spec import SpecError, resolve
from strategies.fedncf import per_item_mean_gradient
from tests.helpers import run_fake

REC = {"dataset": "synthetic-rec", "rounds": 2, "fraction": 0.05, "eval_every": 2, "nodes": 4}


def _strip(history):
    return [{k: v for k, v in r.items() if k != "round_seconds"} for r in history]


def test_rho_zero_is_fedncf_bit_for_bit():
    fedncf, fedncf_history, _ = run_fake(REC)
    sam, sam_history, _ = run_fake({**REC, "method": "fedrecgel", "fedrecgel.rho_sh": 0.0,
                                    "fedrecgel.rho_ns": 0.0})
    for name, value in fedncf.params.items():
        assert torch.equal(value, sam.params[name]), name
    assert _strip(fedncf_history) == _strip(sam_history)


def test_sam_gradient_equals_a_hand_computed_two_pass_step():
    # Least squares on a 2-parameter-tensor model; its gradient is written out by hand, so the
    # reference shares no code with fedsim.optim (nor with autograd).
    x = torch.tensor([[1.0, 2.0], [0.5, -1.0], [3.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([1.0, 0.0, 2.0], dtype=torch.float64)
    w = torch.tensor([0.3, -0.2], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([0.1], dtype=torch.float64, requires_grad=True)
    loss_fn = lambda: ((x @ w + b - y) ** 2).mean()

    def hand_grad(w_, b_):
        r = (x @ w_ + b_ - y).numpy()
        return 2 * x.numpy().T @ r / 3, np.array([2 * r.mean()])

    rho = 0.05
    gw, gb = hand_grad(w.detach(), b.detach())
    norm = np.sqrt((gw ** 2).sum() + (gb ** 2).sum())
    expected = hand_grad(w.detach() + torch.from_numpy(rho * gw / norm),
                         b.detach() + torch.from_numpy(rho * gb / norm))
    base = torch.autograd.grad(loss_fn(), [w, b])
    got = sam_gradient(loss_fn, [w, b], base, rho)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g.numpy(), e, rtol=1e-12)
    assert w.tolist() == [0.3, -0.2] and b.tolist() == [0.1]  # restored exactly
    # rho = 0: no extra pass, the base gradient itself.
    calls = []
    assert all(g is h for g, h in zip(sam_gradient(lambda: calls.append(1), [w, b], base, 0.0),
                                      base))
    assert not calls


def test_item_wise_sam_moves_each_touched_row_by_rho_and_the_rest_by_the_group_norm():
    grad = torch.tensor([[3.0, 4.0], [0.0, 0.0], [1e-3, 0.0], [-2.0, 1.0]])
    eps = rowwise_perturbation(grad, 0.1)
    np.testing.assert_allclose(eps.norm(dim=1).numpy(), [0.1, 0.0, 0.1, 0.1], rtol=1e-6)
    np.testing.assert_allclose(eps[0].numpy(), [0.06, 0.08], rtol=1e-6)
    dense = [torch.tensor([3.0]), torch.tensor([[4.0]])]
    mixed = perturbation([grad, *dense], 0.1, rowwise=[True, False, False])
    assert torch.equal(mixed[0], eps)
    np.testing.assert_allclose([mixed[1].item(), mixed[2].item()], [0.06, 0.08], rtol=1e-6)


def test_per_item_mean_divides_item_rows_by_their_touch_count():
    params = {"item.weight": torch.zeros(4, 1), "head.bias": torch.zeros(1)}
    uploads = [
        {"item_ids": np.array([0, 2]), "item.weight": np.array([[2.0], [6.0]], np.float32),
         "head.bias": np.array([1.0], np.float32)},
        {"item_ids": np.array([2]), "item.weight": np.array([[4.0]], np.float32),
         "head.bias": np.array([3.0], np.float32)},
        {"item_ids": np.array([3]), "item.weight": np.array([[9.0]], np.float32),
         "head.bias": np.array([5.0], np.float32)},
    ]
    mean = per_item_mean_gradient(params, uploads, ("item.weight",))
    # item 0: 2/1, item 1: untouched, item 2: (6+4)/2, item 3: 9/1; dense: (1+3+5)/3.
    assert mean["item.weight"].flatten().tolist() == [2.0, 0.0, 5.0, 9.0]
    assert mean["head.bias"].tolist() == [3.0]


def test_fedrecgel_replies_carry_only_shared_gradients():
    # Per-client replies (node_sums = false): each client's upload is what is under test.
    strategy, _, grid = run_fake({**REC, "method": "fedrecgel",
                                  "fedrecgel.item_centric": True, "node_sums": False})
    allowed = {"item_ids", *strategy.params}
    assert any(r.metadata.message_type == "train" for r in grid.replies)
    for reply in grid.replies:
        records = reply.content.array_records
        assert records.keys() <= {"client-arrays"}  # (an evaluation reply holds no arrays)
        for upload in unpack_arrays(records.get("client-arrays", {})).values():
            assert upload.keys() <= allowed, upload.keys() - allowed


def test_fedmf_learns_on_synthetic_data():
    # Dot products of N(0, 0.01²) embeddings start near 0, so with the authors' server lr
    # (1e-3) MF needs many rounds; a larger lr shows learning within a fast test.
    strategy, history, _ = run_fake({**REC, "method": "fedmf", "model": "mf", "rounds": 6,
                                     "fraction": 0.2, "eval_every": 6,
                                     "fedncf.server_lr": 0.01})
    assert set(strategy.params) == {"item.weight"}
    assert history[-1]["hr@10"] > history[0]["hr@10"] + 0.05


@pytest.mark.parametrize("overrides, words", [
    ({"method": "fedmf"}, ["model", "'neumf'", "fedmf", "'mf'"]),
    ({"model": "mf"}, ["model", "fedncf", "'neumf'"]),
    ({"method": "fedrecgel", "fedrecgel.rho_sh": -0.1}, ["fedrecgel.rho_sh", "-0.1", "[0, 100]"]),
])
def test_backbone_and_radius_are_checked(overrides, words):
    with pytest.raises(SpecError) as err:
        resolve(overrides)
    for word in words:
        assert word in str(err.value)


def test_fedrecgel_on_filmtrust_improves_hit_rate_over_round_zero(data_dir):
    _, history, _ = run_fake({"method": "fedrecgel", "dataset": "filmtrust",
                              "data_dir": str(data_dir), "rounds": 3, "eval_every": 3,
                              "fedrecgel.rho_sh": 0.0})
    assert [r["round"] for r in history if "hr@10" in r] == [0, 3]
    assert history[-1]["hr@10"] > history[0]["hr@10"] + 0.2
