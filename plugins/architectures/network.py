"""Describe a built module to the lottery engine: prunable weights, classifier, channel groups."""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn

from lthbench.protocols import ChannelGroup, Network

#: Layers whose weights pruners may prune.
PRUNABLE_LAYERS = (nn.Conv2d, nn.Linear)


def prunable_weights(module: nn.Module) -> list[str]:
    """Names of the weights of every Conv2d and Linear layer, in registration order."""
    return [
        f"{name}.weight" if name else "weight"
        for name, layer in module.named_modules()
        if isinstance(layer, PRUNABLE_LAYERS)
    ]


def describe(module: nn.Module, channel_groups: list[ChannelGroup]) -> Network:
    """Wrap a module whose last registered Conv2d/Linear layer is its classifier."""
    prunable = prunable_weights(module)
    return Network(module, prunable, output=prunable[-1], channel_groups=channel_groups)


def sequential_channel_groups(
    features: nn.Sequential, prefix: str, head: str, features_per_channel: int
) -> list[ChannelGroup]:
    """Channel groups of a plain stack of convolutions followed by a linear head.

    Each convolution in ``features`` (registered as ``prefix``) is a group:
    its bias and the BatchNorm that follows it are coupled, and it is read by
    the next convolution, or by the ``head`` weight for the last one, where
    one channel spans ``features_per_channel`` inputs.
    """
    groups: list[ChannelGroup] = []
    producer: str | None = None
    coupled: list[str] = []
    for index, layer in enumerate(features):
        name = f"{prefix}.{index}"
        if isinstance(layer, nn.Conv2d):
            if producer is not None:
                groups.append(ChannelGroup(producer, tuple(coupled), ((f"{name}.weight", 1),)))
            producer = f"{name}.weight"
            coupled = [f"{name}.bias"] if layer.bias is not None else []
        elif isinstance(layer, nn.BatchNorm2d) and producer is not None:
            coupled += [f"{name}.weight", f"{name}.bias"]
    if producer is not None:
        groups.append(ChannelGroup(producer, tuple(coupled), ((head, features_per_channel),)))
    return groups


def flattened_size(features: nn.Module, input_shape: tuple[int, ...]) -> tuple[int, int]:
    """``(channels, height * width)`` of the map ``features`` makes from one input.

    Found by running a zero image through the layers (which hold no batch
    statistics) rather than by re-deriving the size arithmetic of each layer.
    """
    with torch.no_grad():
        channels, *spatial = features(torch.zeros(1, *input_shape)).shape[1:]
    return channels, math.prod(spatial)


def conv_classifier(features: nn.Sequential, hidden: tuple[int, ...], num_classes: int,
                    input_shape: tuple[int, ...]) -> Network:
    """``features``, flattened, then Linear layers of ``hidden`` units with ReLU and a Linear to ``num_classes``.

    The module's children are ``features``, ``flatten`` and ``classifier``;
    every convolution of ``features`` is a channel group, the last one read
    by ``classifier.0``.
    """
    channels, area = flattened_size(features, input_shape)
    widths = (channels * area, *hidden)
    layers: list[nn.Module] = []
    for width_in, width_out in zip(widths, hidden):
        layers += [nn.Linear(width_in, width_out), nn.ReLU()]
    classifier = nn.Sequential(*layers, nn.Linear(widths[-1], num_classes))
    module = nn.Sequential(OrderedDict(features=features, flatten=nn.Flatten(), classifier=classifier))
    return describe(module, sequential_channel_groups(features, "features", "classifier.0.weight", area))
