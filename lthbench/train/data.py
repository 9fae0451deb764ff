"""Whole data sets as tensors on the training device: seeded splits, batches by index, GPU augmentation.

Small-network training is limited by the input pipeline, not the GPU, so no
DataLoader is used: images stay uint8 on the device, batches are gathered by
index from a seeded permutation, and normalisation and augmentation run on
the whole batch at once (the approach of airbench).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from lthbench.protocols import Dataset, TensorData
from lthbench.config.settings import Training

_loaded: dict[tuple[str, str, bool], TensorData] = {}


def load_split(dataset: Dataset, root: Path, train: bool, download: bool) -> TensorData:
    """Load a split once per process (later calls return the same tensors)."""
    key = (dataset.name, str(root), train)
    if key not in _loaded:
        _loaded[key] = dataset.load(root, train=train, download=download)
    return _loaded[key]


def seeded_generator(*parts: object, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on ``device`` seeded from a stable hash of ``parts`` (ints and strings)."""
    value = 0
    for part in parts:
        for byte in str(part).encode() + b"\x00":
            value = (value * 1_000_003 + byte) % (2**61 - 1)
    generator = torch.Generator(device=device)
    generator.manual_seed(value)
    return generator


@dataclass
class DeviceData:
    """Training, validation and test images of one seed, resident on one device."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    augment: bool
    seed: int

    @property
    def train_size(self) -> int:
        """Number of training images (validation held out)."""
        return len(self.train_labels)

    def iterations_per_epoch(self, batch_size: int) -> int:
        """Full batches per pass over the training images (the last partial batch is dropped)."""
        return max(1, self.train_size // batch_size)

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """The seeded permutation of the training images for one epoch, on the device."""
        order = torch.randperm(self.train_size, generator=seeded_generator("order", self.seed, epoch))
        return order.to(self.train_images.device, non_blocking=True)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images to normalised float32."""
        return (images.float().div_(255) - self.mean) / self.std

    def training_batch(self, order: torch.Tensor, step: int, batch_size: int, iteration: int) -> tuple:
        """Images and labels of batch ``step`` of an epoch, augmented when enabled."""
        index = order[step * batch_size : (step + 1) * batch_size]
        images = self.normalize(self.train_images[index])
        if self.augment:
            images = augment_batch(images, seeded_generator("augment", self.seed, iteration, device=images.device))
        return images, self.train_labels[index]


def augment_batch(images: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Random crop after zero padding, and random horizontal flip, per image, on the batch's device.

    ``generator`` must live on the images' device, so no host round trip happens.

    Written by hand because torchvision's transforms draw one crop per call
    rather than per image of a batch.
    """
    n, _, height, width = images.shape
    shifts = torch.randint(0, 2 * padding + 1, (2, n), generator=generator, device=images.device)
    flips = torch.rand(n, generator=generator, device=images.device) < 0.5
    padded = F.pad(images, (padding,) * 4)
    rows = (shifts[0, :, None] + torch.arange(height, device=images.device))[:, None, :, None]
    cols = (shifts[1, :, None] + torch.arange(width, device=images.device))[:, None, None, :]
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    channels = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
    cropped = padded[batch, channels, rows, cols]
    return torch.where(flips[:, None, None, None], cropped.flip(3), cropped)


def _subset(data: TensorData, size: int, generator: torch.Generator) -> TensorData:
    if not size or size >= len(data.labels):
        return data
    index = torch.randperm(len(data.labels), generator=generator)[:size]
    return TensorData(data.images[index], data.labels[index])


def prepare(
    dataset: Dataset, root: Path, download: bool, training: Training, seed: int, device: torch.device
) -> DeviceData:
    """Split off a seeded validation set, take any subsets, and move everything to ``device``."""
    train = _subset(load_split(dataset, root, True, download), training.train_subset, seeded_generator("subset", seed))
    test = _subset(load_split(dataset, root, False, download), training.test_subset, seeded_generator("test", seed))
    if training.validation_size >= len(train.labels):
        raise ValueError(
            f"validation_size = {training.validation_size} leaves no training images out of {len(train.labels)}"
        )
    split = torch.randperm(len(train.labels), generator=seeded_generator("validation", seed))
    val_index, train_index = split[: training.validation_size], split[training.validation_size :]
    to = dict(device=device)
    shape = (1, -1, 1, 1)
    augment = dataset.default_augment if training.augment is None else training.augment
    return DeviceData(
        train.images[train_index].to(**to), train.labels[train_index].to(**to),
        train.images[val_index].to(**to), train.labels[val_index].to(**to),
        test.images.to(**to), test.labels.to(**to),
        torch.tensor(dataset.mean, **to).view(shape), torch.tensor(dataset.std, **to).view(shape),
        augment, seed,
    )
