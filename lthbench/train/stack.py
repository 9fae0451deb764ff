"""The arithmetic of a stack of K networks of one architecture: forward with ``torch.func``, losses, evaluation.

:class:`StackedModels` holds K models as stacked parameter tensors of shape
``(K, ...)`` and runs them with ``vmap`` over ``functional_call``.
:class:`SingleStack` shows one ordinary module as a stack of one, through
views of its own parameters. Both go through the same calls
(:func:`stacked_call`, :func:`per_model_losses`, :func:`evaluate_stack`), so
a run that trains alone computes what it computes inside a batched group:
on a CPU in fp32 the results are bit for bit the same (convolutions that
see a different batch per model aside, see :mod:`lthbench.train.batched`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from lthbench.train.data import DeviceData

EVAL_BATCH = 2048


def can_batch(module: nn.Module) -> bool:
    """Whether a network can run as a stack: no module keeps running statistics or draws random numbers.

    ``vmap`` cannot update BatchNorm's running statistics in place, and a
    stack's dropout masks would differ from a lone model's.
    """
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            return False
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0:
            return False
    return True


def stacked_call(base: nn.Module, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
                 images: torch.Tensor, shared: bool) -> torch.Tensor:
    """Logits ``(K, B, classes)`` of the K models whose stacked ``params``/``buffers`` fill ``base``.

    ``images`` is ``(B, ...)`` when ``shared`` (one batch for every model),
    else ``(K, B, ...)``.
    """
    call = lambda p, b, x: functional_call(base, (p, b), (x,))
    return vmap(call, in_dims=(0, 0, None if shared else 0))(params, buffers, images)


def per_model_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each model's mean cross-entropy, shape ``(K,)``, from logits ``(K, B, C)`` and labels ``(K, B)``."""
    k = logits.shape[0]
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none").view(k, -1).mean(1)


class StackedModels:
    """K copies of one architecture, held as stacked parameter tensors of shape ``(K, ...)``."""

    def __init__(self, modules: Sequence[nn.Module], masks: Sequence[dict[str, torch.Tensor]]):
        self.count = len(modules)
        self.params, self.buffers = stack_module_state(list(modules))
        self.base = copy.deepcopy(modules[0]).to("meta")
        names = sorted(set().union(*masks)) if masks else []
        self.masked = [(self.params[name], torch.stack([m[name] for m in masks]).to(self.params[name].dtype))
                       for name in names]

    def apply_masks(self) -> None:
        """Zero every pruned weight of every model."""
        if self.masked:
            with torch.no_grad():
                torch._foreach_mul_([p for p, _ in self.masked], [m for _, m in self.masked])

    def forward(self, images: torch.Tensor, shared: bool) -> torch.Tensor:
        """Logits ``(K, B, classes)``; ``images`` is ``(B, ...)`` when ``shared``, else ``(K, B, ...)``."""
        return stacked_call(self.base, self.params, self.buffers, images, shared)

    def unstack_into(self, modules: Sequence[nn.Module]) -> None:
        """Copy each model's trained weights back into its module."""
        with torch.no_grad():
            for k, module in enumerate(modules):
                for name, param in module.named_parameters():
                    param.copy_(self.params[name][k])


class SingleStack:
    """One module as a stack of one: gradients flow into the module's own parameters."""

    count = 1

    def __init__(self, module: nn.Module):
        self.module = module
        self.base = copy.deepcopy(module).to("meta")
        # no stackable module updates its buffers, so their views are taken once
        self.buffers = {name: b.unsqueeze(0) for name, b in module.named_buffers()}

    def forward(self, images: torch.Tensor, shared: bool = True) -> torch.Tensor:
        """Logits ``(1, B, classes)`` of a batch ``(B, ...)``."""
        params = {name: p.unsqueeze(0) for name, p in self.module.named_parameters()}  # per call, for autograd
        return stacked_call(self.base, params, self.buffers, images, shared=True)


@torch.no_grad()
def evaluate_stack(stack: StackedModels | SingleStack, images: torch.Tensor, labels: torch.Tensor,
                   data: DeviceData, shared: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-model mean loss and accuracy, shape ``(K,)``, on one split per model (or one shared split)."""
    loss_sum = torch.zeros(stack.count, device=labels.device)
    correct = torch.zeros(stack.count, device=labels.device)
    total = labels.shape[-1]
    for start in range(0, total, EVAL_BATCH):
        x = data.normalize(images[..., start:start + EVAL_BATCH, :, :, :])
        y = labels[..., start:start + EVAL_BATCH]
        logits = stack.forward(x, shared)
        y = y.expand(stack.count, -1) if shared else y
        loss_sum += F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(stack.count, -1).sum(1)
        correct += (logits.argmax(-1) == y).sum(1)
    return loss_sum / total, correct / total
