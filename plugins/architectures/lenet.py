"""LeNet-300-100 (fully connected) and LeNet-5 (convolutional)."""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

from torch import nn

from lthbench.protocols import Network

from .initialization import SeededInit, glorot_normal
from .network import conv_classifier, describe


class LeNet300100(SeededInit):
    """Fully connected 300-100 network of Frankle & Carbin (2019), Figure 2.

    Gaussian Glorot weights and zero biases, as in the paper.
    """

    name = "lenet_300_100"
    description = "Fully connected network with hidden layers of 300 and 100 ReLU units (LeNet-300-100)"
    conv_init = linear_init = glorot_normal

    def build(self, input_shape: tuple[int, ...], num_classes: int, params: Any) -> Network:
        """Flatten the image, then Linear 300, ReLU, Linear 100, ReLU, Linear ``num_classes``."""
        module = nn.Sequential(
            OrderedDict(
                flatten=nn.Flatten(),
                fc1=nn.Linear(math.prod(input_shape), 300),
                relu1=nn.ReLU(),
                fc2=nn.Linear(300, 100),
                relu2=nn.ReLU(),
                fc3=nn.Linear(100, num_classes),
            )
        )
        return describe(module, channel_groups=[])


class LeNet5(SeededInit):
    """LeCun et al. (1998) LeNet-5 with ReLU and max-pooling.

    Gaussian Glorot weights and zero biases, like the paper's other small networks.
    """

    name = "lenet5"
    description = "LeNet-5: conv 6@5x5, pool, conv 16@5x5, pool, fully connected 120-84, with ReLU"
    conv_init = linear_init = glorot_normal

    def build(self, input_shape: tuple[int, ...], num_classes: int, params: Any) -> Network:
        """Build LeNet-5; the first conv pads by 2 so 28x28 inputs see the 32x32 geometry."""
        features = nn.Sequential(
            nn.Conv2d(input_shape[0], 6, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        return conv_classifier(features, (120, 84), num_classes, input_shape)
