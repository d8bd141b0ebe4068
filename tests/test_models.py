"""NeuMF's fast scorers (split first tower layer, chunked passes) equal its forward pass."""

import pytest
import torch

from fedsim.models.neumf import NeuMF


@pytest.mark.parametrize("num_items", [300, 5000])  # several users a pass; a row in two passes
def test_neumf_score_all_and_candidates_equal_forward(num_items):
    torch.manual_seed(0)
    model = NeuMF(num_users=7, num_items=num_items)
    with torch.no_grad():
        for table in (model.user_gmf, model.user_mlp, model.item_gmf, model.item_mlp):
            table.weight.normal_()  # O(1) embeddings, so the tower's ReLUs are not all off
        users = torch.arange(7)
        pairs_users = users.repeat_interleave(num_items)
        pairs_items = torch.arange(num_items).repeat(7)
        expected = model(pairs_users, pairs_items).reshape(7, num_items)
        torch.testing.assert_close(model.score_all(users), expected, rtol=1e-5, atol=1e-5)
        candidates = torch.randint(0, num_items, (7, 100))
        torch.testing.assert_close(model.score_candidates(users, candidates),
                                   expected.gather(1, candidates), rtol=1e-5, atol=1e-5)
