"""The device grammar of benchmark files and the command line: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""

from __future__ import annotations

import re

import torch

#: The valid device names, in words, for error messages.
DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def is_device(name: object, auto: bool = True) -> bool:
    """Whether ``name`` is a device of the grammar; ``auto`` counts only where ``auto`` is true."""
    return isinstance(name, str) and _DEVICE.fullmatch(name) is not None and (auto or name != "auto")


def resolve_device(name: str) -> torch.device:
    """``auto`` is the first GPU when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def visible_devices(name: str) -> list[str]:
    """The devices that ``name`` means for worker processes: every visible GPU for ``cuda``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    return [name]
