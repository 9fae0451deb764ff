"""Pruning masks: build them, count them, and choose what a round removes.

A mask is a bool tensor per parameter name, ``True`` where the weight is kept.
These helpers know no concrete pruner; pruners (built-in or third-party) use
:func:`removal_count` and :func:`prune_smallest` to turn scores into masks, e.g.
a magnitude pruner is one line per layer::

    new = prune_smallest(weight.abs(), mask, removal_count(mask, rate))
"""

from __future__ import annotations

import math

import torch

from lthbench.protocols import Network


def full_masks(network: Network) -> dict[str, torch.Tensor]:
    """All-``True`` masks for every prunable weight of ``network``, on its device."""
    params = dict(network.module.named_parameters())
    return {name: torch.ones_like(params[name], dtype=torch.bool) for name in network.prunable}


def count_remaining(masks: dict[str, torch.Tensor], names: list[str]) -> dict[str, tuple[int, int]]:
    """``(kept, total)`` entries of the mask of each parameter in ``names``."""
    return {name: (int(masks[name].sum()), masks[name].numel()) for name in names}


def weights_remaining(masks: dict[str, torch.Tensor], names: list[str]) -> float:
    """Fraction of the weights in ``names`` that are still kept (1.0 for dense)."""
    counts = count_remaining(masks, names).values()
    total = sum(size for _, size in counts)
    return sum(kept for kept, _ in counts) / total if total else 1.0


def keep_count(original: int, remaining: int, rate: float) -> int:
    """How many of a layer's ``remaining`` weights (out of ``original``) to keep when pruning ``rate`` of them.

    Iterative pruning at a constant rate ``p`` should leave
    ``round(original * (1 - p) ** k)`` weights after ``k`` rounds. Rounding each
    round's own count, ``round(remaining * (1 - p))``, lets the rounding errors
    add up (to as much as ``0.5 / p`` weights), so the count is read as a point
    of that geometric schedule instead: take the first round ``k`` with
    ``round(original * (1 - p) ** k) == remaining`` and keep
    ``round(original * (1 - p) ** (k + 1))``. From a dense mask (``k = 0``) this
    reproduces the schedule exactly for as long as its counts differ from one
    round to the next, that is while a round removes about one weight or more
    (``original * (1 - p) ** k * p >= 1``). Where the schedule would keep the
    same count for several rounds, or where ``remaining`` lies on no point of it
    (a mask made at another rate or by another pruner), the round's own count
    ``round(remaining * (1 - p))`` is kept instead. Either way the result is
    within one weight of ``remaining * (1 - p)``. ``round`` is Python's, which
    rounds halves to even.
    """
    if not 0 <= rate <= 1:
        raise ValueError(f"rate = {rate!r} is not allowed; it must be in [0, 1]")
    if not 0 <= remaining <= original:
        raise ValueError(f"remaining = {remaining} must be between 0 and original = {original}")
    if rate == 0 or remaining == 0:
        return remaining
    if rate == 1:
        return 0
    survival = 1 - rate
    # Rounds whose count is at most `remaining` satisfy original * survival**k <= remaining + 0.5;
    # start one below that bound (float slack) and walk to the first such round.
    k = max(0, math.ceil(math.log((remaining + 0.5) / original) / math.log(survival)) - 1)
    while round(original * survival**k) > remaining:
        k += 1
    if round(original * survival**k) == remaining:
        keep = round(original * survival ** (k + 1))
        if keep < remaining:
            return keep
    return round(remaining * survival)


def removal_count(mask: torch.Tensor, rate: float) -> int:
    """How many of the kept entries of ``mask`` to prune at ``rate`` (see :func:`keep_count`)."""
    kept = int(mask.sum())
    return kept - keep_count(mask.numel(), kept, rate)


def prune_smallest(scores: torch.Tensor, mask: torch.Tensor, count: int) -> torch.Tensor:
    """A new mask that also prunes the ``count`` lowest-scoring entries ``mask`` still keeps.

    Ties are broken by position: among equal scores the entry with the lower
    flat (row-major) index is pruned first. Entries already pruned stay pruned
    and are never counted. ``scores`` and ``mask`` must have the same shape.
    """
    if scores.shape != mask.shape:
        raise ValueError(f"scores have shape {tuple(scores.shape)} but the mask {tuple(mask.shape)}")
    kept = mask.reshape(-1).nonzero().squeeze(1)
    if not 0 <= count <= kept.numel():
        raise ValueError(f"cannot prune {count} entries of a mask that keeps {kept.numel()}")
    # A stable sort keeps equal scores in index order, which is the tie-break.
    order = torch.sort(scores.reshape(-1)[kept], stable=True).indices
    new = mask.reshape(-1).clone()
    new[kept[order[:count]]] = False
    return new.view(mask.shape)
