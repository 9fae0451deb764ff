"""The optimizer and the learning-rate schedule of a training, and its length in iterations."""

from __future__ import annotations

import math

import torch

from lthbench.config.settings import Training


def total_iterations(training: Training, iterations_per_epoch: int) -> int:
    """Training length in iterations (``epochs`` wins when set)."""
    return round(training.epochs * iterations_per_epoch) if training.epochs else training.iterations


def lr_factor(training: Training, iteration: int, total: int) -> float:
    """Multiplier of the base learning rate at ``iteration``: linear warmup, then step or cosine decay."""
    warmup = min(1.0, (iteration + 1) / training.warmup_iterations) if training.warmup_iterations else 1.0
    if training.lr_schedule == "cosine":
        decay = 0.5 * (1 + math.cos(math.pi * min(iteration, total) / total))
    else:
        decay = training.lr_gamma ** sum(iteration >= m for m in training.lr_milestones)
    return warmup * decay


def make_optimizer(training: Training, parameters: list[torch.Tensor]) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov, weight decay) or Adam, as configured.

    Fused on CUDA, foreach elsewhere: the CPU fused kernel's rounding depends
    on an element's position, which breaks stacked/lone equality.
    """
    if parameters and all(p.device.type == "cuda" for p in parameters):
        try:
            return _optimizer(training, parameters, fused=True)
        except RuntimeError:  # no fused kernel for these parameters
            pass
    return _optimizer(training, parameters, foreach=True)


def _optimizer(training: Training, parameters: list[torch.Tensor], **implementation: bool) -> torch.optim.Optimizer:
    if training.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=training.lr, betas=training.betas,
                                weight_decay=training.weight_decay, **implementation)
    return torch.optim.SGD(parameters, lr=training.lr, momentum=training.momentum,
                           nesterov=training.nesterov, weight_decay=training.weight_decay, **implementation)
