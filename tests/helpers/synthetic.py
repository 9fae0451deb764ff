"""A small learnable problem on the device-resident data type, a small MLP, a random half mask, and training calls."""

from __future__ import annotations

import torch
from torch import nn

from lthbench.config.settings import Training
from lthbench.train.data import DeviceData
from lthbench.train.loop import train
from lthbench.train.result import TrainResult
from lthbench.train.stack import MaskApplier, make_stack


def synthetic_data(n=600, seed=0, augment=False) -> DeviceData:
    """A learnable 10-class problem of 1x8x8 uint8 images."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=g)
    images = torch.randint(0, 60, (n, 1, 8, 8), generator=g, dtype=torch.uint8)
    images[torch.arange(n), 0, labels % 8, labels // 2] = 255
    zero = torch.zeros(1).view(1, 1, 1, 1)
    return DeviceData(images[:400], labels[:400], images[400:500], labels[400:500], images[500:], labels[500:],
                      zero + 0.2, zero + 0.3, augment, seed)


def small_net() -> nn.Module:
    """A seeded 64-32-10 MLP."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def half_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """A seeded mask keeping about half of every weight matrix."""
    g = torch.Generator().manual_seed(1)
    return {name: torch.rand(p.shape, generator=g) < 0.5 for name, p in model.named_parameters() if p.dim() == 2}


def apply_masks(module: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Zero, in place, the entries of ``module``'s parameters that ``masks`` prune (once)."""
    MaskApplier(module, masks)()


def train_alone(model: nn.Module, masks: dict[str, torch.Tensor], data: DeviceData, training: Training,
                **options) -> TrainResult:
    """Train one model as the engine trains a lone run."""
    return train(make_stack([model], [masks], training.precision), [data], training, **options)[0]


def train_together(models: list[nn.Module], masks: list[dict[str, torch.Tensor]], datas: list[DeviceData],
                   training: Training, **options) -> list[TrainResult]:
    """Train models as one stack, as the engine trains a group."""
    return train(make_stack(models, masks, training.precision), datas, training, **options)
