"""Seeded initialisation: every parameter redrawn from an explicit generator.

All draws go through ``torch.nn.init`` with ``generator=``, so the same
generator state gives bitwise the same weights and the global random state is
never read or advanced. Values are drawn on the generator's device and copied
into the parameters, so a CPU generator gives the same weights to a module on
any device.
"""

from __future__ import annotations

from typing import Callable, ClassVar

import torch
from torch import nn

from lthbench.protocols import Architecture

#: Draws a layer's weight in place from a generator.
WeightInit = Callable[[torch.Tensor, torch.Generator], torch.Tensor]

CONV_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
BATCH_NORM_LAYERS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
#: Standard deviation timm draws position embeddings and class tokens with.
EMBEDDING_STD = 0.02


def glorot_normal(weight: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Gaussian Glorot (Xavier) init, as in Frankle & Carbin (2019)."""
    return nn.init.xavier_normal_(weight, generator=generator)


def kaiming_normal(weight: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Gaussian He (Kaiming) init for ReLU networks, fan-in mode."""
    return nn.init.kaiming_normal_(weight, mode="fan_in", nonlinearity="relu", generator=generator)


def embedding_normal(weight: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Normal with standard deviation 0.02, truncated at ±2 as timm does for embeddings."""
    return nn.init.trunc_normal_(weight, std=EMBEDDING_STD, generator=generator)


def draw(parameter: torch.Tensor, generator: torch.Generator, init: WeightInit) -> None:
    """Fill ``parameter`` in place with values ``init`` draws on the generator's device."""
    values = torch.empty(parameter.shape, dtype=parameter.dtype, device=generator.device)
    init(values, generator)
    with torch.no_grad():
        parameter.copy_(values)


def initialize_parameters(
    module: nn.Module, generator: torch.Generator, conv_init: WeightInit, linear_init: WeightInit
) -> None:
    """Redraw every parameter of ``module`` in place and reset BatchNorm statistics.

    Convolution weights are drawn by ``conv_init``, linear weights by
    ``linear_init``; every bias is zero; any other one-dimensional ``weight``
    is the scale of a normalization layer and is one; any other parameter
    (position embeddings, class tokens, layer scales) is drawn by
    ``embedding_normal``.
    """
    for layer in module.modules():
        if isinstance(layer, BATCH_NORM_LAYERS):
            layer.reset_running_stats()
        for name, parameter in layer.named_parameters(recurse=False):
            if name == "bias":
                nn.init.zeros_(parameter)
            elif name == "weight" and isinstance(layer, CONV_LAYERS):
                draw(parameter, generator, conv_init)
            elif name == "weight" and isinstance(layer, nn.Linear):
                draw(parameter, generator, linear_init)
            elif name == "weight" and parameter.dim() == 1:
                nn.init.ones_(parameter)
            else:
                draw(parameter, generator, embedding_normal)


class SeededInit(Architecture):
    """An architecture whose ``initialize`` is :func:`initialize_parameters` with the class's two weight rules.

    Subclasses set ``conv_init`` and ``linear_init``.
    """

    #: Draws convolution weights.
    conv_init: ClassVar[WeightInit]
    #: Draws linear weights.
    linear_init: ClassVar[WeightInit]

    def initialize(self, module: nn.Module, generator: torch.Generator) -> None:
        """Redraw every parameter of ``module`` from ``generator`` (see :func:`initialize_parameters`)."""
        cls = type(self)  # through the class: plain functions, not methods bound to ``self``
        initialize_parameters(module, generator, cls.conv_init, cls.linear_init)
