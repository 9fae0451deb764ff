"""The built-in data sets and the data-root resolution, on the real shared data where it exists."""

from __future__ import annotations

import hashlib
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import datasets

from lthbench.data_root import cache_dir, resolve_data_root
from lthbench.errors import DataNotFound
from lthbench_plugins.datasets import CIFAR10_CLASSES, Cifar10, Cifar100, Cifar10Jpeg, lthbench_datasets

MNIST_TEST_CLASS_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
BY_NAME = {dataset.name: dataset for dataset in lthbench_datasets()}


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache folder for the whole session, so the slow first decode happens once."""
    return tmp_path_factory.mktemp("lthbench-cache")


@pytest.fixture(autouse=True)
def isolated_cache(session_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep every derived file out of the user's cache folder."""
    monkeypatch.setenv("LTHBENCH_CACHE", str(session_cache))


@pytest.fixture
def shared_root(data_root: Path) -> Path:
    """The folder holding the real data sets (the ``data_root`` fixture of conftest.py)."""
    return data_root


def snapshot(root: Path) -> list[tuple[str, int, int]]:
    """Every path under ``root`` with its size and modification time."""
    return sorted((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*"))


# --------------------------------------------------------------------------- MNIST-like, real data


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_mnist_likes_load_both_splits_from_the_shared_root_without_writing_to_it(name: str, shared_root: Path) -> None:
    before = snapshot(shared_root)
    dataset = BY_NAME[name]
    dataset.check(shared_root, download=False)
    train, test = dataset.load(shared_root, True, False), dataset.load(shared_root, False, False)
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.images.dtype == torch.uint8 and train.images.is_contiguous()
    assert test.labels.dtype == torch.int64 and len(test.labels) == 10000
    assert int(train.labels.min()) == 0 and int(train.labels.max()) == 9
    assert snapshot(shared_root) == before


def test_mnist_test_split_has_the_known_class_counts(shared_root: Path) -> None:
    labels = BY_NAME["mnist"].load(shared_root, False, False).labels
    assert torch.bincount(labels).tolist() == MNIST_TEST_CLASS_COUNTS


def test_fashion_mnist_test_split_is_balanced(shared_root: Path) -> None:
    labels = BY_NAME["fashion-mnist"].load(shared_root, False, False).labels
    assert torch.bincount(labels).tolist() == [1000] * 10


# --------------------------------------------------------------------------- CIFAR-10 JPEG


def test_cifar10_jpeg_test_split_from_the_shared_archive(shared_root: Path) -> None:
    before = snapshot(shared_root)
    test = BY_NAME["cifar10-jpeg"].load(shared_root, False, False)
    assert test.images.shape == (10000, 3, 32, 32) and test.images.dtype == torch.uint8
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    assert snapshot(shared_root) == before


def test_cifar10_jpeg_second_load_reads_the_cached_tensors(shared_root: Path) -> None:
    first = BY_NAME["cifar10-jpeg"].load(shared_root, False, False)
    cached = cache_dir(shared_root) / "cifar10-jpeg" / "test.pt"
    written = cached.stat().st_mtime_ns
    second = BY_NAME["cifar10-jpeg"].load(shared_root, False, False)
    assert cached.stat().st_mtime_ns == written
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)


def write_tiny_cifar10_jpeg(folder: Path, step: int = 20) -> None:
    """One flat-grey JPEG per class and split, class k at grey level ``step * k``."""
    for split in ("train", "test"):
        for label, class_name in enumerate(CIFAR10_CLASSES):
            (folder / split / class_name).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (32, 32), (step * label,) * 3).save(folder / split / class_name / "0000.jpg")


def write_tiny_cifar10_jpeg_archive(root: Path, step: int = 20) -> None:
    """The tiny data set as ``root/CIFAR10-JPEG.tar.gz``."""
    write_tiny_cifar10_jpeg(root.parent / "CIFAR10-JPEG", step)
    with tarfile.open(root / "CIFAR10-JPEG.tar.gz", "w:gz") as tar:
        tar.add(root.parent / "CIFAR10-JPEG", arcname="CIFAR10-JPEG")


@pytest.mark.parametrize("layout", ["folder", "archive"])
def test_cifar10_jpeg_reads_an_extracted_folder_or_an_archive(layout: str, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    if layout == "folder":
        write_tiny_cifar10_jpeg(root / "CIFAR10-JPEG")
    else:
        write_tiny_cifar10_jpeg_archive(root)
    before = snapshot(root)
    for train in (True, False):
        split = Cifar10Jpeg().load(root, train, False)
        assert split.images.shape == (10, 3, 32, 32) and split.labels.tolist() == list(range(10))
        grey_levels = split.images.float().mean(dim=(1, 2, 3))
        assert torch.allclose(grey_levels, torch.arange(10) * 20.0, atol=2)
    assert snapshot(root) == before


def test_cifar10_jpeg_decodes_again_when_the_archive_is_newer_than_the_cache(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    write_tiny_cifar10_jpeg_archive(root, step=20)
    assert Cifar10Jpeg().load(root, False, False).images[1].float().mean() == pytest.approx(20, abs=2)
    write_tiny_cifar10_jpeg_archive(root, step=10)
    later = (cache_dir(root) / "cifar10-jpeg" / "test.pt").stat().st_mtime + 10
    os.utime(root / "CIFAR10-JPEG.tar.gz", (later, later))
    assert Cifar10Jpeg().load(root, False, False).images[1].float().mean() == pytest.approx(10, abs=2)


# --------------------------------------------------------------------------- missing data


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_missing_data_is_one_sentence_naming_the_path_and_how_to_get_it(name: str, tmp_path: Path) -> None:
    dataset = BY_NAME[name]
    with pytest.raises(DataNotFound) as checked:
        dataset.check(tmp_path, download=False)
    with pytest.raises(DataNotFound) as loaded:
        dataset.load(tmp_path, True, False)
    message = str(loaded.value)
    assert str(checked.value) == message
    assert message.startswith(f"{name}: ") and str(tmp_path) in message and "download" in message
    assert "\n" not in message


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "cifar10", "cifar100"])
def test_check_lets_torchvision_download_a_missing_data_set_when_allowed(name: str, tmp_path: Path) -> None:
    BY_NAME[name].check(tmp_path, download=True)


def test_cifar10_jpeg_cannot_be_downloaded_and_points_at_cifar10(tmp_path: Path) -> None:
    with pytest.raises(DataNotFound, match="cannot be downloaded.*'cifar10'"):
        Cifar10Jpeg().load(tmp_path, True, download=True)


def test_damaged_mnist_archive_is_reported(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for archive, _ in datasets.MNIST.resources:
        (raw / archive).write_bytes(b"not gzip")
    with pytest.raises(DataNotFound, match="is damaged"):
        BY_NAME["mnist"].load(tmp_path, False, False)


# --------------------------------------------------------------------------- CIFAR pickled batches


def write_fake_cifar(root: Path, cls: type, images_per_file: int, monkeypatch: pytest.MonkeyPatch) -> dict:
    """Pickled batches in torchvision's format, with torchvision's md5 table patched to match them."""
    folder = root / cls.base_folder
    folder.mkdir(parents=True)
    label_key = "labels" if cls is datasets.CIFAR10 else "fine_labels"
    written = {}

    def md5_after_writing(name: str, content: dict) -> str:
        (folder / name).write_bytes(pickle.dumps(content))
        return hashlib.md5((folder / name).read_bytes()).hexdigest()

    def batches(names: list[list[str]], offset: int) -> list[list[str]]:
        patched = []
        for index, (name, _) in enumerate(names):
            start = offset + index * images_per_file
            data = (np.arange(images_per_file * 3072).reshape(images_per_file, 3072) + start * 3072) % 251
            labels = [(start + i) % 7 for i in range(images_per_file)]
            written[name] = (data.astype(np.uint8), labels)
            patched.append([name, md5_after_writing(name, {"data": written[name][0], label_key: labels})])
        return patched

    monkeypatch.setattr(cls, "train_list", batches(cls.train_list, 0))
    monkeypatch.setattr(cls, "test_list", batches(cls.test_list, 1000))
    meta_md5 = md5_after_writing(cls.meta["filename"], {cls.meta["key"]: [f"class{i}" for i in range(7)]})
    monkeypatch.setitem(cls.meta, "md5", meta_md5)
    return written


@pytest.mark.parametrize("dataset", [Cifar10(), Cifar100()], ids=["cifar10", "cifar100"])
def test_cifar_batches_become_nchw_uint8(dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    written = write_fake_cifar(tmp_path, dataset.torchvision_class, 3, monkeypatch)
    dataset.check(tmp_path, download=False)
    test = dataset.load(tmp_path, False, False)
    data, labels = written[dataset.torchvision_class.test_list[0][0]]
    assert test.images.dtype == torch.uint8 and test.images.is_contiguous()
    assert torch.equal(test.images, torch.from_numpy(data).reshape(3, 3, 32, 32))
    assert test.labels.dtype == torch.int64 and test.labels.tolist() == labels
    train = dataset.load(tmp_path, True, False)
    assert train.images.shape == (3 * len(dataset.torchvision_class.train_list), 3, 32, 32)


def test_damaged_cifar_batch_is_one_sentence_from_torchvision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_fake_cifar(tmp_path, datasets.CIFAR10, 2, monkeypatch)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"truncated")
    with pytest.raises(DataNotFound, match=r"^cifar10: torchvision could not read it under .*corrupted[^\n]*$"):
        Cifar10().load(tmp_path, False, False)


# --------------------------------------------------------------------------- data root


def test_data_root_precedence_is_cli_then_config_then_env_then_cache(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LTHBENCH_DATA", "/from/env")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_data_root("/from/cli", "/from/config") == Path("/from/cli")
    assert resolve_data_root(None, "/from/config") == Path("/from/config")
    assert resolve_data_root(None, "") == Path("/from/env")
    monkeypatch.delenv("LTHBENCH_DATA")
    assert resolve_data_root(None) == tmp_path / "xdg" / "lthbench" / "data"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_data_root(None) == tmp_path / "home" / ".cache" / "lthbench" / "data"


def test_cache_dir_is_under_the_cache_env_and_distinct_per_root(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LTHBENCH_CACHE", str(tmp_path / "cache"))
    first, second = cache_dir(tmp_path / "a" / "data"), cache_dir(tmp_path / "b" / "data")
    assert first.parent == second.parent == tmp_path / "cache" / "derived"
    assert first != second and first == cache_dir(tmp_path / "a" / "data")
