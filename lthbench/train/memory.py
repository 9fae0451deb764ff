"""How many models of one architecture a stacked training holds: the GPU memory budget."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from lthbench.config.settings import Training
from lthbench.train.data import DeviceData
from lthbench.train.stack import EVAL_BATCH

#: The most models one stacked training step holds.
MAX_TRIALS = 64
#: The share of the free GPU memory a stacked training may fill.
MEMORY_FRACTION = 0.5


def bytes_per_model(parameters: int, optimizer: str, activation_bytes: int, element_size: int = 4) -> int:
    """Device memory one more model of a stacked training needs, in bytes.

    Per parameter: its stacked weight, gradient and float mask, the
    optimizer's state (Adam's two moments, SGD's momentum buffer) and a
    one-byte bool mask; plus ``activation_bytes``, the activations of one
    training step (measured by :func:`measure_activation_bytes`).
    """
    states = 2 if optimizer == "adam" else 1
    return parameters * (element_size * (3 + states) + 1) + activation_bytes


def trials_that_fit(per_model: int, free: int, fraction: float = MEMORY_FRACTION, cap: int = MAX_TRIALS) -> int:
    """How many models of ``per_model`` bytes fit into ``fraction`` of ``free`` bytes: at least 1, at most ``cap``."""
    return max(1, min(cap, int(free * fraction) // per_model))


def measure_activation_bytes(module: nn.Module, data: DeviceData, training: Training) -> int:
    """Peak CUDA memory of one training step and one evaluation batch of a copy of ``module``, gradients excluded."""
    device = data.train_images.device
    model = copy.deepcopy(module)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    images, labels = data.training_batch(data.epoch_order(0), 0, training.batch_size, 0)
    F.cross_entropy(model(images), labels).backward()
    with torch.no_grad():
        model(data.normalize(data.val_images[:EVAL_BATCH]))
    peak = torch.cuda.max_memory_allocated(device) - before
    gradients = sum(p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None)
    return max(0, peak - gradients)


def trials_that_fit_device(module: nn.Module, data: DeviceData, training: Training) -> int:
    """How many copies of ``module`` train stacked on ``data``'s device: :data:`MAX_TRIALS` on a CPU.

    On a GPU, half of the memory that is free (to the driver, or cached by
    PyTorch's allocator) over the bytes one model needs
    (:func:`bytes_per_model` with measured activations).
    """
    device = data.train_images.device
    if device.type != "cuda":
        return MAX_TRIALS
    activations = measure_activation_bytes(module, data, training)
    parameters = sum(p.numel() for p in module.parameters())
    free = torch.cuda.mem_get_info(device)[0] + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return trials_that_fit(bytes_per_model(parameters, training.optimizer, activations), free)
