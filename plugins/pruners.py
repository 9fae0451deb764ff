"""Built-in pruners: layerwise and global magnitude, L1-norm filter pruning, and the random control.

Every pruner removes ``context.rate`` of the *remaining* weights, counted by
:func:`lthbench.masks.keep_count` (iterative pruning at rate ``p`` keeps exactly
``round(n * (1 - p) ** k)`` of ``n`` weights after ``k`` rounds), and breaks ties
as :func:`lthbench.masks.prune_smallest` does: among equal scores the lower
index is pruned first. Masks of parameters a pruner does not touch are
returned unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from lthbench import hookimpl
from lthbench.errors import suggest
from lthbench.masks import prune_smallest, removal_count
from lthbench.protocols import ChannelGroup, Network, PruningContext, Pruner


def _check_layers(names: Iterable[str], network: Network, key: str) -> None:
    """Raise ValueError naming the first of ``names`` that is not a prunable weight of the network."""
    prunable = network.prunable
    for name in names:
        if name not in prunable:
            raise ValueError(
                f"{key} names {name!r}, which is not a prunable layer{suggest(name, prunable)}; "
                f"prunable layers: {', '.join(prunable)}"
            )


def _check_rate(rate: float, key: str) -> None:
    """Raise ValueError unless ``rate`` is a fraction in [0, 1]."""
    if not 0 <= rate <= 1:
        raise ValueError(f"{key} = {rate!r} is not allowed; it must be in [0, 1]")


# --------------------------------------------------------------------------- layerwise magnitude


@dataclass(frozen=True)
class LayerwiseParams:
    """Per-layer rates per round that replace the round's rate, e.g. ``layer_rates = [["fc1.weight", 0.1]]``.

    In one-shot mode they are compounded per level like the round's rate.
    """

    layer_rates: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        names = [name for name, _ in self.layer_rates]
        if len(set(names)) != len(names):
            raise ValueError(f"layer_rates names a layer twice: {names}")
        for name, rate in self.layer_rates:
            _check_rate(rate, f"layer_rates rate of {name!r}")


class LayerwiseMagnitude(Pruner):
    """Prune each layer by |w| at its own rate; the output layer at ``output_rate`` (Frankle & Carbin 2019)."""

    name = "layerwise_magnitude"
    description = "smallest |w| per layer; the output layer at output_rate (default half the rate)"
    Params = LayerwiseParams

    def check(self, params: LayerwiseParams, network: Network) -> None:
        """Refuse ``layer_rates`` naming a layer that is not a prunable weight of ``network``."""
        _check_layers(dict(params.layer_rates), network, "layer_rates")

    def prune(self, context: PruningContext, params: LayerwiseParams) -> dict[str, torch.Tensor]:
        """Remove the smallest-magnitude remaining weights of every prunable layer."""
        self.check(params, context.network)
        overrides = dict(params.layer_rates)
        masks = dict(context.masks)
        for name in context.network.prunable:
            default = context.output_rate if name == context.network.output else context.rate
            rate = context.level_rate(overrides[name]) if name in overrides else default
            mask = context.masks[name]
            masks[name] = prune_smallest(context.weights[name].abs(), mask, removal_count(mask, rate))
        return masks


# --------------------------------------------------------------------------- global magnitude


@dataclass(frozen=True)
class GlobalParams:
    """Prunable layers left out of the global ranking (kept as they are)."""

    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(set(self.exclude)) != len(self.exclude):
            raise ValueError(f"exclude names a layer twice: {list(self.exclude)}")


class GlobalMagnitude(Pruner):
    """Prune by one |w| threshold shared by all included layers (as ``torch.nn.utils.prune.global_unstructured``)."""

    name = "global_magnitude"
    description = "smallest |w| over all prunable layers at once (one threshold); exclude = [layers]"
    Params = GlobalParams

    def check(self, params: GlobalParams, network: Network) -> None:
        """Refuse ``exclude`` naming a layer ``network`` lacks, or leaving it no layer to prune."""
        _check_layers(params.exclude, network, "exclude")
        if all(name in params.exclude for name in network.prunable):
            raise ValueError("exclude leaves no prunable layer for global_magnitude to prune")

    def prune(self, context: PruningContext, params: GlobalParams) -> dict[str, torch.Tensor]:
        """Remove ``rate`` of the remaining weights of the included layers, smallest |w| first.

        Ties across layers are broken by position in the concatenation of the
        included layers in ``network.prunable`` order, lower first.
        """
        self.check(params, context.network)
        names = [name for name in context.network.prunable if name not in params.exclude]
        scores = torch.cat([context.weights[name].abs().reshape(-1) for name in names])
        mask = torch.cat([context.masks[name].reshape(-1) for name in names])
        pruned = prune_smallest(scores, mask, removal_count(mask, context.rate))
        masks = dict(context.masks)
        sizes = [context.masks[name].numel() for name in names]
        for name, part in zip(names, pruned.split(sizes)):
            masks[name] = part.view(context.masks[name].shape)
        return masks


# --------------------------------------------------------------------------- L1 filter pruning


def _remove_channels(masks: dict[str, torch.Tensor], group: ChannelGroup, removed: torch.Tensor,
                     weights: dict[str, torch.Tensor]) -> None:
    """Mask, in place, everything of the channels ``removed`` (a bool per filter) of ``group``."""
    masks[group.producer][removed] = False
    for name in group.coupled:
        masks.setdefault(name, torch.ones_like(weights[name], dtype=torch.bool))[removed] = False
    channels = removed.numel()
    for name, per_channel in group.consumers:
        mask = masks.setdefault(name, torch.ones_like(weights[name], dtype=torch.bool))
        if mask.dim() < 2 or mask.shape[1] != channels * per_channel:
            raise ValueError(
                f"consumer {name!r} of {group.producer!r} does not read {channels} channels "
                f"of {per_channel} inputs each along its dimension 1 (its shape is {tuple(mask.shape)})"
            )
        # Input channel c of the consumer is the block of per_channel inputs c*per_channel:(c+1)*per_channel
        # (conv: one input channel with its kernel; linear: one flattened feature map).
        mask.view(mask.shape[0], channels, -1)[:, removed] = False


class L1Filter(Pruner):
    """Structured pruning of whole convolution filters by L1 norm, per layer (Li et al. 2017).

    Each filter group declared by the architecture loses ``rate`` of its
    remaining filters, those with the smallest sum of |w| over input channels
    and kernel. A pruned filter masks its weights, its coupled parameters (conv
    bias, BatchNorm weight and bias) and the consumers' inputs that read it.
    Filters are scored on the round's weights, independently for every layer.
    """

    name = "l1_filter"
    description = "whole conv filters by smallest L1 norm, per layer, with their BatchNorm and next-layer inputs"

    def check(self, params: object, network: Network) -> None:
        """Refuse a network that declares no convolution filter groups."""
        if not network.channel_groups:
            raise ValueError(
                "l1_filter needs an architecture with convolution filter groups; "
                f"{type(network.module).__name__} declares none"
            )

    def prune(self, context: PruningContext, params: object) -> dict[str, torch.Tensor]:
        """Return masks for the prunable weights and for the coupled parameters of every group."""
        self.check(params, context.network)
        groups = context.network.channel_groups
        masks = {name: mask.clone(memory_format=torch.contiguous_format) for name, mask in context.masks.items()}
        for group in groups:
            weight_mask = context.masks[group.producer]
            filters = weight_mask.reshape(weight_mask.shape[0], -1).any(dim=1)
            scores = context.weights[group.producer].abs().reshape(weight_mask.shape[0], -1).sum(dim=1)
            kept = prune_smallest(scores, filters, removal_count(filters, context.rate))
            _remove_channels(masks, group, ~kept, context.weights)
        return masks


# --------------------------------------------------------------------------- random control


@dataclass(frozen=True)
class RandomParams:
    """The unstructured pruner whose per-layer removal counts the random control copies."""

    like: str = "layerwise_magnitude"

    def __post_init__(self) -> None:
        if self.like == RandomPruner.name:
            raise ValueError("like = 'random' is not allowed; name the pruner whose counts random should copy")


class RandomPruner(Pruner):
    """The control: remove as many weights per layer as ``like`` would, at uniformly random positions.

    Only unstructured pruners can be mimicked: a ``like`` pruner that masks
    parameters other than prunable weights (filter pruning) is refused.
    """

    name = "random"
    description = "uniformly random weights, as many per layer as the pruner named by like (default layerwise)"
    Params = RandomParams

    def mimics(self, params: RandomParams) -> str:
        """The ``like`` pruner: a random-pruned cell is the random-mask control of the cell pruned by it."""
        return params.like

    def prune(self, context: PruningContext, params: RandomParams) -> dict[str, torch.Tensor]:
        """Draw, with ``context.generator``, which remaining weights to remove."""
        reference = context.delegate(params.like)
        prunable = set(context.network.prunable)
        for name, mask in reference.items():
            before = context.masks.get(name, torch.ones_like(mask))
            if name not in prunable and bool((before & ~mask).any()):
                raise ValueError(
                    f"random mimics unstructured pruners only; {params.like!r} also masks {name!r}, "
                    "which is not a prunable weight"
                )
        masks = dict(context.masks)
        for name in context.network.prunable:
            mask = context.masks[name]
            count = int(mask.sum()) - int(reference[name].sum())
            # Random scores make prune_smallest draw a uniformly random subset of the kept entries.
            scores = torch.rand(mask.shape, generator=context.generator, device=context.generator.device)
            masks[name] = prune_smallest(scores.to(mask.device), mask, count)
        return masks


@hookimpl
def lthbench_pruners() -> list[Pruner]:
    """The built-in pruners."""
    return [LayerwiseMagnitude(), GlobalMagnitude(), L1Filter(), RandomPruner()]
