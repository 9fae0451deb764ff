"""Where runs read data and write results, on which device they train, and how a record names that device."""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

import torch

import lthbench
from lthbench.registry import Registry
from lthbench.store import Store


@dataclass
class Workspace:
    """Where runs read data and write results, and on which device they train."""

    registry: Registry
    store: Store
    data_root: Path
    download: bool
    device: torch.device


def processor_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :func:`platform.processor` says, else the machine type."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_label(device: torch.device) -> str:
    """The device in words, e.g. ``cuda:0 (NVIDIA H100 80GB HBM3; AMD EPYC 9654)`` or ``cpu (Intel Xeon ...)``."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)}; {processor_model()})"
    return f"cpu ({processor_model()})"


#: Libraries whose versions a record and ``matrix.json`` name, besides lthbench, torch and Python.
LIBRARIES = ("numpy", "scipy", "pandas")


def library_versions() -> dict[str, str]:
    """Versions that can change a result (numpy, scipy and pandas read from their distributions, not imported)."""
    from importlib.metadata import PackageNotFoundError, version

    import torchvision

    versions = {"lthbench": lthbench.__version__, "torch": torch.__version__,
                "torchvision": torchvision.__version__, "python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions
