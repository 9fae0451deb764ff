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


def device_label(device: torch.device) -> str:
    """The device in words, e.g. ``cuda:0 (NVIDIA H100 80GB HBM3)`` or ``cpu``."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()})"


def library_versions() -> dict[str, str]:
    """Versions that can change a result."""
    import torchvision

    return {"lthbench": lthbench.__version__, "torch": torch.__version__,
            "torchvision": torchvision.__version__, "python": platform.python_version()}
