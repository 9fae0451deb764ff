"""Mask helpers: building, applying, counting, and choosing what a round removes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lthbench.masks import (
    count_remaining,
    full_masks,
    keep_count,
    prune_smallest,
    removal_count,
    weights_remaining,
)
from lthbench.protocols import Network
from lthbench.train.stack import MaskApplier
from helpers.synthetic import apply_masks


def two_layer_network() -> Network:
    module = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    return Network(module, prunable=["0.weight", "1.weight"], output="1.weight")


def test_full_masks_keep_every_prunable_weight_and_nothing_else():
    masks = full_masks(two_layer_network())
    assert set(masks) == {"0.weight", "1.weight"}
    assert masks["0.weight"].dtype == torch.bool and masks["0.weight"].shape == (2, 3)
    assert bool(masks["0.weight"].all()) and bool(masks["1.weight"].all())


def test_mask_applier_zeros_masked_entries_in_place_with_masks_on_the_param_dtype():
    module = nn.Linear(2, 2).double()
    with torch.no_grad():
        module.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        module.bias.copy_(torch.tensor([5.0, 6.0]))
    applier = MaskApplier(module, {"weight": torch.tensor([[True, False], [False, True]]),
                                   "bias": torch.tensor([False, True])})
    assert all(mask.dtype == torch.float64 for mask in applier.masks)
    applier()
    assert module.weight.tolist() == [[1.0, 0.0], [0.0, 4.0]]
    assert module.bias.tolist() == [0.0, 6.0]
    with torch.no_grad():
        module.weight.add_(1.0)  # what an optimizer step would do to pruned weights
    applier()
    assert module.weight.tolist() == [[2.0, 0.0], [0.0, 5.0]]


def test_apply_masks_zeros_once():
    module = nn.Linear(2, 1)
    with torch.no_grad():
        module.weight.copy_(torch.tensor([[7.0, 8.0]]))
    apply_masks(module, {"weight": torch.tensor([[False, True]])})
    assert module.weight.tolist() == [[0.0, 8.0]]


def test_mask_applier_rejects_unknown_names_and_wrong_shapes():
    module = nn.Linear(2, 1)
    with pytest.raises(KeyError, match="nope"):
        MaskApplier(module, {"nope": torch.ones(2, dtype=torch.bool)})
    with pytest.raises(ValueError, match="weight"):
        MaskApplier(module, {"weight": torch.ones(2, 1, dtype=torch.bool)})


def test_count_and_weights_remaining():
    masks = {"a": torch.tensor([[True, False], [True, True]]), "b": torch.tensor([False, False, True, True])}
    assert count_remaining(masks, ["a", "b"]) == {"a": (3, 4), "b": (2, 4)}
    assert weights_remaining(masks, ["a", "b"]) == 5 / 8
    assert weights_remaining(masks, ["b"]) == 0.5


def test_prune_smallest_removes_the_lowest_scores_among_kept_entries():
    scores = torch.tensor([[0.5, 0.1], [0.3, 0.9]])
    mask = torch.tensor([[True, False], [True, True]])  # 0.1 is already pruned and must not count
    assert prune_smallest(scores, mask, 2).tolist() == [[False, False], [False, True]]
    assert prune_smallest(scores, mask, 0).tolist() == mask.tolist()


def test_prune_smallest_breaks_ties_by_lower_flat_index_first():
    scores = torch.tensor([[2.0, 1.0, 1.0], [1.0, 2.0, 1.0]])
    mask = torch.ones(2, 3, dtype=torch.bool)
    # The four 1.0s sit at flat indices 1, 2, 3, 5: indices 1 and 2 go first.
    assert prune_smallest(scores, mask, 2).tolist() == [[True, False, False], [True, True, True]]
    assert prune_smallest(scores, mask, 3).tolist() == [[True, False, False], [False, True, True]]


def test_prune_smallest_rejects_counts_beyond_the_kept_entries():
    with pytest.raises(ValueError, match="keeps 1"):
        prune_smallest(torch.zeros(2), torch.tensor([True, False]), 2)
    with pytest.raises(ValueError, match="shape"):
        prune_smallest(torch.zeros(3), torch.ones(2, dtype=torch.bool), 1)


def test_keep_count_from_a_dense_layer():
    assert keep_count(10, 10, 0.2) == 8
    assert keep_count(5, 5, 0.5) == 2  # 2.5 rounds half to even
    assert keep_count(7, 7, 0.0) == 7
    assert keep_count(7, 4, 1.0) == 0


def test_keep_count_follows_the_schedule_where_per_round_rounding_drifts():
    # 13 weights at 20%: the schedule is 13, 10.4, 8.32, 6.656 -> 13, 10, 8, 7,
    # while rounding each round alone gives 13, round(10.4)=10, round(8)=8, round(6.4)=6.
    counts = [13]
    for _ in range(3):
        counts.append(keep_count(13, counts[-1], 0.2))
    assert counts == [13, 10, 8, 7]


def test_keep_count_is_exact_over_many_sizes_and_rates_while_rounds_remove_weights():
    for original in range(1, 300):
        for rate in (0.1, 0.2, 0.36, 0.5):
            remaining, k = original, 0
            while original * (1 - rate) ** k * rate >= 1:
                remaining, k = keep_count(original, remaining, rate), k + 1
                assert remaining == round(original * (1 - rate) ** k), (original, rate, k)


def test_keep_count_rounds_the_round_itself_off_the_schedule():
    # 3 of 10 at 20%: the schedule stays at 3 for two rounds (3.28, 2.62), so the round's own count is used.
    assert keep_count(10, 3, 0.2) == 2
    # 37 of 100 is on no point of the 50% schedule: round(18.5) = 18.
    assert keep_count(100, 37, 0.5) == 18


def test_keep_count_rejects_bad_arguments():
    with pytest.raises(ValueError, match="rate"):
        keep_count(10, 10, 1.5)
    with pytest.raises(ValueError, match="remaining"):
        keep_count(10, 11, 0.2)


def test_removal_count_counts_only_kept_entries():
    mask = torch.tensor([True] * 8 + [False] * 2)  # 8 of 10 left: round two of a 20% schedule keeps 6.4 -> 6
    assert removal_count(mask, 0.2) == 2
    assert removal_count(torch.ones(10, dtype=torch.bool), 0.2) == 2
