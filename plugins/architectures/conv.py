"""Conv-2, Conv-4 and Conv-6: the VGG-like CIFAR networks of Frankle & Carbin (2019), Figure 2."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from lthbench.protocols import Network

from .initialization import SeededInit, glorot_normal
from .network import conv_classifier

#: Width of the two hidden fully connected layers.
HIDDEN_UNITS = 256


class ConvNet(SeededInit):
    """Stages of two 3x3 convolutions and a max-pool, then fully connected 256-256-classes.

    No batch norm, and Gaussian Glorot weights with zero biases, as in the
    paper. Subclasses set ``widths``, one per stage.
    """

    widths: ClassVar[tuple[int, ...]]
    conv_init = linear_init = glorot_normal

    def build(self, input_shape: tuple[int, ...], num_classes: int, params: Any) -> Network:
        """Build the network; the first linear layer's size follows the input size."""
        layers: list[nn.Module] = []
        in_channels = input_shape[0]
        for width in self.widths:
            layers += [
                nn.Conv2d(in_channels, width, kernel_size=3, padding=1),
                nn.ReLU(),
                nn.Conv2d(width, width, kernel_size=3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            in_channels = width
        return conv_classifier(nn.Sequential(*layers), (HIDDEN_UNITS, HIDDEN_UNITS), num_classes, input_shape)


class Conv2(ConvNet):
    """Conv-2: one stage of 64 filters."""

    name = "conv2"
    description = "Conv-2 of Frankle & Carbin: conv 64-64, pool, fc 256-256 (no batch norm)"
    widths = (64,)


class Conv4(ConvNet):
    """Conv-4: stages of 64 and 128 filters."""

    name = "conv4"
    description = "Conv-4 of Frankle & Carbin: conv 64-64, pool, 128-128, pool, fc 256-256 (no batch norm)"
    widths = (64, 128)


class Conv6(ConvNet):
    """Conv-6: stages of 64, 128 and 256 filters."""

    name = "conv6"
    description = "Conv-6 of Frankle & Carbin: conv 64-64, pool, 128-128, pool, 256-256, pool, fc 256-256"
    widths = (64, 128, 256)
