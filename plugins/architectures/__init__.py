"""Built-in architectures: the lottery-ticket paper's networks, CIFAR VGGs and ResNets, timm models."""

from __future__ import annotations

from lthbench import hookimpl
from lthbench.protocols import Architecture

from .conv import Conv2, Conv4, Conv6
from .lenet import LeNet5, LeNet300100
from .resnet import ResNet18, ResNet20, ResNet32, ResNet56, ResNet110
from .timm_models import TimmModel
from .vgg import VGG11, VGG13, VGG16, VGG19


@hookimpl
def lthbench_architectures() -> list[Architecture]:
    """Return one instance of every built-in architecture."""
    return [
        LeNet300100(),
        LeNet5(),
        Conv2(),
        Conv4(),
        Conv6(),
        VGG11(),
        VGG13(),
        VGG16(),
        VGG19(),
        ResNet20(),
        ResNet32(),
        ResNet56(),
        ResNet110(),
        ResNet18(),
        TimmModel(),
    ]
