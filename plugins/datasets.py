"""Built-in data sets: MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100 through torchvision, and a JPEG copy of CIFAR-10.

Each loads a whole split as one uint8 tensor. lthbench never writes into the
data root except when torchvision downloads a data set the user allowed it to
fetch: the root may be a shared read-only folder, and a writability test does
not tell (a privileged user may write into folders marked read-only), so
derived copies always go to :func:`lthbench.data_root.cache_dir`.
"""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from PIL import Image

from lthbench import hookimpl
from lthbench.data_root import cache_dir
from lthbench.errors import DataNotFound
from lthbench.protocols import Dataset, TensorData

if TYPE_CHECKING:
    from torchvision import datasets

HOW_TO_GET = (
    "set download = true in [benchmark] or pass --download, "
    "or point --data-root / LTHBENCH_DATA at a folder holding {}"
)
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _from_torchvision(name: str, cls: type, root: Path, train: bool, download: bool) -> Any:
    """Build a torchvision data set; its not-found, corrupted and download errors become DataNotFound."""
    try:
        return cls(str(root), train=train, download=download)
    except (RuntimeError, OSError) as error:  # what torchvision raises for missing files and failed downloads
        reason = " ".join(str(error).split()) or type(error).__name__  # every line: the cause follows the first
        action = "download or read" if download else "read"
        raise DataNotFound(f"{name}: torchvision could not {action} it under {root} ({reason})") from error


class _Torchvision:
    """A torchvision data set class, imported when first used (importing torchvision takes seconds)."""

    def __init__(self, name: str):
        self.name = name

    def __get__(self, instance: Any, owner: type) -> type:
        from torchvision import datasets

        return getattr(datasets, self.name)


class IdxDataset(Dataset):
    """MNIST-like data in torchvision's layout, ``<root>/<Class>/raw/*-ubyte`` or the same files ``.gz``-compressed.

    torchvision reads only decompressed idx files and decompresses ``.gz``
    files into the root itself; when only those are there, they are
    decompressed once into the cache folder and torchvision reads that copy.
    """

    torchvision_class: ClassVar[type[datasets.MNIST]]
    num_classes = 10
    input_shape = (1, 28, 28)
    train_size = 60000
    test_size = 10000

    def _raw(self, root: Path) -> Path:
        return Path(root) / self.torchvision_class.__name__ / "raw"

    def _holds(self, root: Path, compressed: bool) -> bool:
        archives = [archive for archive, _ in self.torchvision_class.resources]
        return all((self._raw(root) / (a if compressed else a.removesuffix(".gz"))).is_file() for a in archives)

    def check(self, root: Path, download: bool) -> None:
        """Raise DataNotFound unless the idx files (plain or ``.gz``) are there or may be downloaded."""
        if not (download or self._holds(root, compressed=False) or self._holds(root, compressed=True)):
            archives = ", ".join(archive for archive, _ in self.torchvision_class.resources)
            where = f"{self.torchvision_class.__name__}/raw"
            raise DataNotFound(f"{self.name}: {archives} are not in {self._raw(root)}; {HOW_TO_GET.format(where)}")

    def load(self, root: Path, train: bool, download: bool) -> TensorData:
        """One split as ``N x 1 x 28 x 28`` uint8 images and int64 labels."""
        self.check(root, download)
        source = root
        if not self._holds(root, compressed=False) and self._holds(root, compressed=True):
            source = self._decompressed_copy(root)
        split = _from_torchvision(self.name, self.torchvision_class, source, train, download)
        return TensorData(split.data.unsqueeze(1).contiguous(), split.targets.long())

    def _decompressed_copy(self, root: Path) -> Path:
        """Decompress the root's verified ``.gz`` files into the cache once; return the cache as torchvision root."""
        from torchvision.datasets.utils import check_integrity, extract_archive

        copy_root = cache_dir(root)
        raw = self._raw(copy_root)
        raw.mkdir(parents=True, exist_ok=True)
        for archive, md5 in self.torchvision_class.resources:
            target = raw / archive.removesuffix(".gz")
            if target.is_file():
                continue
            compressed = self._raw(root) / archive
            if not check_integrity(compressed, md5):
                raise DataNotFound(f"{self.name}: {compressed} is damaged (its md5 is not {md5}); replace it")
            with tempfile.TemporaryDirectory(dir=raw) as partial:  # a crash never leaves a truncated file behind
                os.replace(extract_archive(compressed, partial), target)
        return copy_root


class PickledCifar(Dataset):
    """CIFAR in the pickled-batch layout torchvision downloads, ``<root>/<base_folder>/``."""

    torchvision_class: ClassVar[type[datasets.CIFAR10]]
    input_shape = (3, 32, 32)
    default_augment = True
    train_size = 50000
    test_size = 10000

    def check(self, root: Path, download: bool) -> None:
        """Raise DataNotFound unless the batch files are there or may be downloaded."""
        cls = self.torchvision_class
        folder = Path(root) / cls.base_folder
        names = [name for name, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
        if not download and not all((folder / name).is_file() for name in names):
            where = HOW_TO_GET.format(cls.base_folder)
            raise DataNotFound(f"{self.name}: {', '.join(names)} are not in {folder}; {where}")

    def load(self, root: Path, train: bool, download: bool) -> TensorData:
        """One split as ``N x 3 x 32 x 32`` uint8 images (torchvision keeps them ``N x H x W x C``)."""
        self.check(root, download)
        split = _from_torchvision(self.name, self.torchvision_class, root, train, download)
        images = torch.from_numpy(split.data).permute(0, 3, 1, 2).contiguous()
        return TensorData(images, torch.tensor(split.targets, dtype=torch.int64))


class Mnist(IdxDataset):
    """MNIST handwritten digits."""

    name = "mnist"
    description = "MNIST handwritten digits, 60000 + 10000 grey 28x28 (torchvision)"
    torchvision_class = _Torchvision("MNIST")
    mean = (0.1307,)
    std = (0.3081,)


class FashionMnist(IdxDataset):
    """Fashion-MNIST clothing images."""

    name = "fashion-mnist"
    description = "Fashion-MNIST clothing, 60000 + 10000 grey 28x28 (torchvision)"
    torchvision_class = _Torchvision("FashionMNIST")
    mean = (0.2860,)
    std = (0.3530,)


class Cifar10(PickledCifar):
    """The original CIFAR-10."""

    name = "cifar10"
    description = "CIFAR-10, 50000 + 10000 RGB 32x32, 10 classes (torchvision)"
    torchvision_class = _Torchvision("CIFAR10")
    num_classes = 10
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)


class Cifar100(PickledCifar):
    """The original CIFAR-100 with its 100 fine labels."""

    name = "cifar100"
    description = "CIFAR-100, 50000 + 10000 RGB 32x32, 100 fine classes (torchvision)"
    torchvision_class = _Torchvision("CIFAR100")
    num_classes = 100
    mean = (0.5071, 0.4865, 0.4409)
    std = (0.2673, 0.2564, 0.2762)


def _files_with_paths(source: Path) -> Iterator[tuple[PurePosixPath, bytes]]:
    """Every file of a folder or a ``.tar.gz`` archive, as (path including the top folder, content).

    The archive is streamed rather than extracted: writing 60,000 small files
    to disk and deleting them again takes far longer than decoding them.
    """
    if source.is_dir():
        for path in sorted(source.rglob("*")):
            if path.is_file():
                yield PurePosixPath(path.relative_to(source.parent).as_posix()), path.read_bytes()
        return
    with tarfile.open(source, "r|gz") as archive:
        for member in archive:
            if member.isfile():
                yield PurePosixPath(member.name), archive.extractfile(member).read()


class Cifar10Jpeg(Dataset):
    """CIFAR-10 re-encoded as JPEG (lossy), from ``CIFAR10-JPEG.tar.gz`` or its extracted ``CIFAR10-JPEG/`` folder.

    Both hold ``CIFAR10-JPEG/{train,test}/<class>/*.jpg``. Decoding 50,000
    JPEGs takes seconds, so each split is decoded on its first load and kept as
    a tensor file in the cache folder.
    """

    name = "cifar10-jpeg"
    description = "CIFAR-10 re-encoded as JPEG quality 75 (lossy stand-in for cifar10), 50000 + 10000 RGB 32x32"
    num_classes = 10
    input_shape = (3, 32, 32)
    mean = Cifar10.mean  # the JPEG copy's own differ by less than 0.002
    std = Cifar10.std
    default_augment = True
    train_size = Cifar10.train_size
    test_size = Cifar10.test_size
    folder = "CIFAR10-JPEG"
    archive = "CIFAR10-JPEG.tar.gz"

    def _source(self, root: Path) -> Path:
        extracted = Path(root) / self.folder
        return extracted if extracted.is_dir() else Path(root) / self.archive

    def check(self, root: Path, download: bool) -> None:
        """Raise DataNotFound unless the archive or its extracted folder is there (it cannot be downloaded)."""
        if not self._source(root).exists():
            raise DataNotFound(
                f"{self.name}: neither {Path(root) / self.archive} nor {Path(root) / self.folder}/ exists, and "
                "this copy cannot be downloaded; put the archive there, or use the data set 'cifar10', "
                "which torchvision downloads"
            )

    def load(self, root: Path, train: bool, download: bool) -> TensorData:
        """One split, decoded on its first load and read from the cache afterwards."""
        self.check(root, download)
        split = "train" if train else "test"
        cached = cache_dir(root) / self.name / f"{split}.pt"
        if not cached.is_file() or cached.stat().st_mtime < self._source(root).stat().st_mtime:
            self._decode_into(self._source(root), split, cached)
        saved = torch.load(cached, weights_only=True)
        return TensorData(saved["images"], saved["labels"])

    def _decode_into(self, source: Path, split: str, cached: Path) -> None:
        """Decode one split of ``source`` into the tensor file ``cached``, replaced atomically."""
        images: list[tuple[int, str, bytes]] = []
        for path, content in _files_with_paths(source):
            if path.suffix != ".jpg" or len(path.parts) != 4 or path.parts[1] != split:
                continue
            if path.parts[2] not in CIFAR10_CLASSES:
                raise DataNotFound(f"{self.name}: {source} holds a class {path.parts[2]!r} that CIFAR-10 lacks")
            images.append((CIFAR10_CLASSES.index(path.parts[2]), path.name, content))
        if not images:
            raise DataNotFound(f"{self.name}: {source} holds no JPEG under {self.folder}/{split}/<class>/")
        images.sort(key=lambda image: image[:2])  # by class, then file name, whatever order the archive has
        pixels = np.stack([np.asarray(Image.open(io.BytesIO(content)).convert("RGB")) for *_, content in images])
        labels = torch.tensor([label for label, *_ in images])
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_name(f"{cached.name}.{os.getpid()}.partial")
        torch.save({"images": torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous(), "labels": labels}, partial)
        os.replace(partial, cached)


@hookimpl
def lthbench_datasets() -> list[Dataset]:
    """The built-in data sets."""
    return [Mnist(), FashionMnist(), Cifar10(), Cifar100(), Cifar10Jpeg()]
