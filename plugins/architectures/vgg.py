"""CIFAR VGG-11/13/16/19 with batch norm (Simonyan & Zisserman 2015; Frankle et al. 2019).

torchvision's ``vgg*_bn`` models are not used: their features assume three
input channels and pool five times, and their head is the 4096-wide ImageNet
classifier. The CIFAR variant keeps the convolution configurations, drops the
last max-pool, averages the map globally and ends in one Linear 512 -> classes.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, ClassVar

from torch import nn

from lthbench.protocols import Network

from .initialization import SeededInit, kaiming_normal
from .network import describe, sequential_channel_groups

#: A max-pool in a configuration.
POOL = "M"


class VGG(SeededInit):
    """3x3 convolutions with batch norm and ReLU, max-pools, global average pool, one Linear.

    Subclasses set ``config``: the output channels of each convolution, with
    ``"M"`` for a max-pool (the configurations of Simonyan & Zisserman's Table 1
    without the final pool). Weights are drawn as ResNet's are: Kaiming-normal,
    zero biases, BatchNorm scale one and shift zero.
    """

    config: ClassVar[tuple[int | str, ...]]
    conv_init = linear_init = kaiming_normal

    def build(self, input_shape: tuple[int, ...], num_classes: int, params: Any) -> Network:
        """Build the network for inputs of at least 16x16 pixels."""
        layers: list[nn.Module] = []
        in_channels = input_shape[0]
        for entry in self.config:
            if entry == POOL:
                layers.append(nn.MaxPool2d(2))
            else:
                conv = nn.Conv2d(in_channels, entry, kernel_size=3, padding=1)
                layers += [conv, nn.BatchNorm2d(entry), nn.ReLU()]
                in_channels = entry
        features = nn.Sequential(*layers)
        module = nn.Sequential(
            OrderedDict(
                features=features,
                pool=nn.AdaptiveAvgPool2d(1),
                flatten=nn.Flatten(),
                fc=nn.Linear(in_channels, num_classes),
            )
        )
        return describe(module, sequential_channel_groups(features, "features", "fc.weight", 1))


class VGG11(VGG):
    """VGG-11 (configuration A)."""

    name = "vgg11"
    description = "CIFAR VGG-11 with batch norm, global average pooling and a 512 -> classes head"
    config = (64, POOL, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512)


class VGG13(VGG):
    """VGG-13 (configuration B)."""

    name = "vgg13"
    description = "CIFAR VGG-13 with batch norm, global average pooling and a 512 -> classes head"
    config = (64, 64, POOL, 128, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512)


class VGG16(VGG):
    """VGG-16 (configuration D)."""

    name = "vgg16"
    description = "CIFAR VGG-16 with batch norm, global average pooling and a 512 -> classes head"
    config = (64, 64, POOL, 128, 128, POOL, 256, 256, 256, POOL, 512, 512, 512, POOL, 512, 512, 512)


class VGG19(VGG):
    """VGG-19 (configuration E)."""

    name = "vgg19"
    description = "CIFAR VGG-19 with batch norm, global average pooling and a 512 -> classes head"
    config = (
        64, 64, POOL, 128, 128, POOL, 256, 256, 256, 256, POOL,
        512, 512, 512, 512, POOL, 512, 512, 512, 512,
    )  # fmt: skip
