"""Whole data sets as tensors on the training device: seeded splits, batches by index, GPU augmentation.

Small-network training is limited by the input pipeline, not the GPU, so no
DataLoader is used: images stay uint8 on the device, batches are gathered by
index from a seeded permutation, and normalisation and augmentation run on
the whole batch at once (the approach of airbench).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
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


class SeedTag(StrEnum):
    """The first part of every :func:`seeded_generator` seed: which random stream it is.

    The tags are part of every stored result but of no run id: renaming one
    changes the numbers stored under unchanged ids.
    """

    INIT = "init"  # θ₀ of a chain's dense run
    PRUNE = "prune"  # a pruner's random choices
    REINIT = "reinit"  # a fresh draw of the initial weights (the reinit control)
    ORDER = "order"  # an epoch's order of the training images
    AUGMENT = "augment"  # an iteration's crops and flips
    SUBSET = "subset"  # the training subset
    TEST = "test"  # the test subset
    VALIDATION = "validation"  # the validation split
    REFERENCE = "reference"  # the shuffling of lthbench bench's plain PyTorch loop


def seeded_generator(*parts: object, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on ``device`` seeded from a stable hash of ``parts`` (a :class:`SeedTag`, then ints and strings).

    The hash and the tags fix every random draw of a run: changing either
    changes every stored result.
    """
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
        order = torch.randperm(self.train_size, generator=seeded_generator(SeedTag.ORDER, self.seed, epoch))
        return order.to(self.train_images.device, non_blocking=True)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images to normalised float32."""
        return (images.float().div_(255) - self.mean) / self.std

    def training_batch(self, order: torch.Tensor, step: int, batch_size: int, iteration: int) -> tuple:
        """Images and labels of batch ``step`` of an epoch, augmented when enabled."""
        index = order[step * batch_size : (step + 1) * batch_size]
        images = self.normalize(self.train_images[index])
        if self.augment:
            generator = seeded_generator(SeedTag.AUGMENT, self.seed, iteration, device=images.device)
            images = augment_batch(images, generator)
        return images, self.train_labels[index]


class Batches:
    """The training batches and evaluation splits of K models, one :class:`DeviceData` each.

    When every model has the same :class:`DeviceData` (the controls of one
    level: same seed), one batch feeds all of them (``shared``); otherwise
    each model draws its own, stacked along a first dimension of K.
    """

    def __init__(self, datas: Sequence[DeviceData], batch_size: int):
        self.first = datas[0]
        self.shared = all(d is datas[0] for d in datas)
        self.sources = list(datas[:1] if self.shared else datas)
        self.batch_size = batch_size
        self.per_epoch = self.first.iterations_per_epoch(batch_size)
        self.val = self._split("val")
        self.test = self._split("test")
        self._orders: list[torch.Tensor] = []
        self._epoch = -1

    @property
    def device(self) -> torch.device:
        """Where the data lives."""
        return self.first.train_images.device

    def training_batch(self, iteration: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and labels of ``iteration`` (each model's epoch order and augmentation)."""
        epoch, step = divmod(iteration, self.per_epoch)
        if epoch != self._epoch:
            self._orders, self._epoch = [d.epoch_order(epoch) for d in self.sources], epoch
        batches = [d.training_batch(order, step, self.batch_size, iteration)
                   for d, order in zip(self.sources, self._orders)]
        if self.shared:
            return batches[0]
        return torch.stack([images for images, _ in batches]), torch.stack([labels for _, labels in batches])

    def _split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        images = [getattr(d, f"{name}_images") for d in self.sources]
        labels = [getattr(d, f"{name}_labels") for d in self.sources]
        if self.shared:
            return images[0], labels[0]
        return torch.stack(images), torch.stack(labels)


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


def _subset(data: TensorData, size: int, key: str, generator: torch.Generator) -> TensorData:
    if size > len(data.labels):
        raise ValueError(f"{key} = {size} is more than the {len(data.labels)} images of the split")
    if not size or size == len(data.labels):
        return data
    index = torch.randperm(len(data.labels), generator=generator)[:size]
    return TensorData(data.images[index], data.labels[index])


def prepare(
    dataset: Dataset, root: Path, download: bool, training: Training, seed: int, device: torch.device
) -> DeviceData:
    """Split off a seeded validation set, take any subsets, and move everything to ``device``.

    Raises ``ValueError`` for a subset larger than its split, or a batch
    larger than the training images: no run trains on a size it does not state.
    """
    train = _subset(load_split(dataset, root, True, download), training.train_subset, "train_subset",
                    seeded_generator(SeedTag.SUBSET, seed))
    test = _subset(load_split(dataset, root, False, download), training.test_subset, "test_subset",
                   seeded_generator(SeedTag.TEST, seed))
    if training.validation_size >= len(train.labels):
        raise ValueError(
            f"validation_size = {training.validation_size} leaves no training images out of {len(train.labels)}"
        )
    if training.batch_size > len(train.labels) - training.validation_size:
        raise ValueError(f"batch_size = {training.batch_size} is larger than the "
                         f"{len(train.labels) - training.validation_size} training images (validation held out)")
    split = torch.randperm(len(train.labels), generator=seeded_generator(SeedTag.VALIDATION, seed))
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
