"""A small learnable problem on the device-resident data type, a small MLP and a random half mask."""

from __future__ import annotations

import torch
from torch import nn

from lthbench.train.data import DeviceData


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
