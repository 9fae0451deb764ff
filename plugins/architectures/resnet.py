"""CIFAR ResNets: ResNet-20/32/56/110 (He et al. 2016) and ResNet-18 with a 3x3 stem.

The residual blocks are torchvision's ``BasicBlock``; torchvision's ``ResNet``
itself always has four stages of 64-512 filters and an ImageNet stem (7x7
stride-2 conv and max-pool), so the CIFAR stacking is assembled here.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from lthbench.protocols import ChannelGroup, Network

from .initialization import SeededInit, kaiming_normal
from .network import describe


class CifarResNet(nn.Module):
    """3x3 stem conv with batch norm, stages of basic blocks, global average pool, one Linear.

    Each stage after the first halves the resolution. Where a block changes
    the shape, its shortcut is a strided 1x1 conv with batch norm (option B).
    """

    def __init__(self, in_channels: int, widths: tuple[int, ...], depths: tuple[int, ...], num_classes: int):
        # imported here: torchvision's models take seconds to import, which listing the plugins must not pay
        from torchvision.models.resnet import BasicBlock, conv1x1, conv3x3

        super().__init__()
        self.conv1 = conv3x3(in_channels, widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        stages = []
        in_width = widths[0]
        for index, (width, depth) in enumerate(zip(widths, depths)):
            stride = 1 if index == 0 else 2
            blocks = []
            for _ in range(depth):
                shortcut = None
                if stride != 1 or in_width != width:
                    shortcut = nn.Sequential(conv1x1(in_width, width, stride), nn.BatchNorm2d(width))
                blocks.append(BasicBlock(in_width, width, stride, shortcut))
                in_width, stride = width, 1
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits for a batch of images."""
        x = self.stages(self.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(self.pool(x), 1))

    def channel_groups(self) -> list[ChannelGroup]:
        """The first conv of every block; its channels feed only the block's second conv."""
        return [
            ChannelGroup(
                producer=f"stages.{stage}.{block}.conv1.weight",
                coupled=(f"stages.{stage}.{block}.bn1.weight", f"stages.{stage}.{block}.bn1.bias"),
                consumers=((f"stages.{stage}.{block}.conv2.weight", 1),),
            )
            for stage, blocks in enumerate(self.stages)
            for block in range(len(blocks))
        ]


class ResNet(SeededInit):
    """A CIFAR ResNet of basic blocks; subclasses set ``widths`` and ``depths`` per stage.

    Kaiming-normal weights, zero biases, BatchNorm scale one and shift zero:
    PyTorch's and He et al.'s convention (open_lth draws the scales uniformly
    from [0, 1) instead).
    """

    widths: ClassVar[tuple[int, ...]]
    depths: ClassVar[tuple[int, ...]]
    conv_init = linear_init = kaiming_normal

    def build(self, input_shape: tuple[int, ...], num_classes: int, params: Any) -> Network:
        """Build the network; global average pooling lets it take any input size."""
        module = CifarResNet(input_shape[0], self.widths, self.depths, num_classes)
        return describe(module, module.channel_groups())


def _cifar_depths(layers: int) -> tuple[int, int, int]:
    """Blocks per stage of the 6n+2-layer CIFAR ResNet."""
    blocks = (layers - 2) // 6
    return (blocks, blocks, blocks)


class ResNet20(ResNet):
    """ResNet-20: three stages of three blocks."""

    name = "resnet20"
    description = "CIFAR ResNet-20 (He et al. 2016): 16/32/64 filters, 1x1-conv shortcuts, 0.27M parameters"
    widths = (16, 32, 64)
    depths = _cifar_depths(20)


class ResNet32(ResNet):
    """ResNet-32: three stages of five blocks."""

    name = "resnet32"
    description = "CIFAR ResNet-32 (He et al. 2016): 16/32/64 filters, 1x1-conv shortcuts"
    widths = (16, 32, 64)
    depths = _cifar_depths(32)


class ResNet56(ResNet):
    """ResNet-56: three stages of nine blocks."""

    name = "resnet56"
    description = "CIFAR ResNet-56 (He et al. 2016): 16/32/64 filters, 1x1-conv shortcuts"
    widths = (16, 32, 64)
    depths = _cifar_depths(56)


class ResNet110(ResNet):
    """ResNet-110: three stages of eighteen blocks."""

    name = "resnet110"
    description = "CIFAR ResNet-110 (He et al. 2016): 16/32/64 filters, 1x1-conv shortcuts"
    widths = (16, 32, 64)
    depths = _cifar_depths(110)


class ResNet18(ResNet):
    """ResNet-18 for CIFAR: four stages of two blocks, 3x3 stem, no max-pool."""

    name = "resnet18"
    description = "CIFAR ResNet-18: 64/128/256/512 filters, 3x3 stem without max-pool, 11M parameters"
    widths = (64, 128, 256, 512)
    depths = (2, 2, 2, 2)
