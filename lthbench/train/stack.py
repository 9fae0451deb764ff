"""The models one training step trains: the :class:`Stack` protocol, and its two kinds.

:class:`VmapStack` holds K >= 1 networks of one architecture as stacked
parameter tensors of shape ``(K, ...)`` and runs them with ``vmap`` over
``functional_call``. Each model keeps its own initial weights, mask, data
order and optimizer state: the optimizers are element-wise (SGD with momentum
and weight decay, Adam), so one optimizer over the stacked tensors updates
every model as its own optimizer would, and the summed loss gives each model
the gradient of its own mean loss. Every network that can stack
(:func:`can_batch`) and trains in fp32 trains through it, a lone one as a
stack of one, so a run's numbers do not depend on the group it trained in.

On a CPU in fp32 a model of a stack records bit for bit what it records
alone, except grouped convolutions (and, on the CPU, convolutions under
several intra-op threads): convolutions of models that each see their own
batch (the seeds of one cell) run as one grouped convolution, and several
threads split a stack's convolution unlike a lone one, so their sums are
ordered differently and those runs agree to rounding (about 1e-7 relative per
step). On a GPU, kernels may pick other algorithms for other batch shapes, so
the agreement is to rounding there too.

:class:`ModuleStack` is one network that cannot stack (BatchNorm, active
dropout, bf16 autocast), called as a module.

Images are ``(B, ...)`` with labels ``(B,)`` when ``shared`` (one batch for
every model), else ``(K, B, ...)`` with labels ``(K, B)``.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Sequence
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from lthbench.train.data import DeviceData

#: Images per forward pass when evaluating a split.
EVAL_BATCH = 2048


class Stack(Protocol):
    """K models that one optimizer trains in one step (see :func:`lthbench.train.loop.train`)."""

    count: int

    def parameters(self) -> list[torch.Tensor]:
        """What the optimizer steps."""

    def apply_masks(self) -> None:
        """Zero every pruned weight of every model."""

    def losses(self, images: torch.Tensor, labels: torch.Tensor, shared: bool) -> torch.Tensor:
        """Each model's mean cross-entropy on its training batch, shape ``(K,)``."""

    def evaluate(self, images: torch.Tensor, labels: torch.Tensor, data: DeviceData,
                 shared: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Each model's mean loss and accuracy on a whole split, shape ``(K,)``, as device tensors (no host sync)."""

    def state(self) -> dict[str, torch.Tensor]:
        """The weights a checkpoint holds."""

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`state` returned."""

    def module_state(self, index: int) -> dict[str, torch.Tensor]:
        """A copy of model ``index``'s state dict as it is now (θ_k for rewinding)."""

    def finish(self) -> None:
        """Leave each model's trained weights in its module."""


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


def has_convolution(module: nn.Module) -> bool:
    """Whether a network holds a convolution (on a small CPU, a stack of such networks is slower than one at a time)."""
    return any(isinstance(m, nn.modules.conv._ConvNd) for m in module.modules())


def make_stack(modules: Sequence[nn.Module], masks: Sequence[dict[str, torch.Tensor]], precision: str) -> Stack:
    """The stack that trains ``modules`` (each with its masks): a :class:`VmapStack` whenever they can stack."""
    if precision == "fp32" and can_batch(modules[0]):
        return VmapStack(modules, masks)
    if len(modules) != 1:
        raise ValueError("only networks without BatchNorm or active dropout train stacked, and only in fp32")
    return ModuleStack(modules[0], masks[0], precision)


def _check_masks(module: nn.Module, masks: dict[str, torch.Tensor]) -> dict[str, nn.Parameter]:
    """``module``'s parameters by name, after checking that every mask names one of them and has its shape."""
    params = dict(module.named_parameters())
    unknown = sorted(set(masks) - set(params))
    if unknown:
        raise KeyError(f"masks name parameters the module does not have: {', '.join(unknown)}")
    for name, mask in masks.items():
        if mask.shape != params[name].shape:
            shape = tuple(params[name].shape)
            raise ValueError(f"mask of {name!r} has shape {tuple(mask.shape)}, the parameter {shape}")
    return params


class MaskApplier:
    """Zero the pruned entries of a module's parameters in place, cheaply and repeatedly.

    The parameter/mask pairs are resolved once, with each mask converted to its
    parameter's device and dtype, so that a call (made after every optimizer
    step) is a single fused multiply over all masked parameters.
    """

    def __init__(self, module: nn.Module, masks: dict[str, torch.Tensor]):
        params = _check_masks(module, masks)
        self.params = [params[name] for name in masks]
        self.masks = [mask.to(device=params[name].device, dtype=params[name].dtype) for name, mask in masks.items()]

    @torch.no_grad()
    def __call__(self) -> None:
        """Multiply every masked parameter by its mask."""
        if self.params:
            torch._foreach_mul_(self.params, self.masks)


def _evaluate(sums: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]], count: int,
              images: torch.Tensor, labels: torch.Tensor, data: DeviceData) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean loss and accuracy ``(count,)`` over a split, from ``sums(x, y)``: each chunk's summed loss and hits."""
    loss_sum = torch.zeros(count, device=labels.device)
    correct = torch.zeros(count, device=labels.device)
    total = labels.shape[-1]
    with torch.no_grad():
        for start in range(0, total, EVAL_BATCH):
            loss, hits = sums(data.normalize(images[..., start:start + EVAL_BATCH, :, :, :]),
                              labels[..., start:start + EVAL_BATCH])
            loss_sum += loss
            correct += hits
    return loss_sum / total, correct / total


class VmapStack:
    """K copies of one architecture, held as stacked parameter tensors of shape ``(K, ...)``."""

    def __init__(self, modules: Sequence[nn.Module], masks: Sequence[dict[str, torch.Tensor]]):
        self.modules = list(modules)
        self.count = len(self.modules)
        for module, mask in zip(self.modules, masks):
            _check_masks(module, mask)
        self.params, self.buffers = stack_module_state(self.modules)
        self.base = copy.deepcopy(self.modules[0]).to("meta")
        self.masked: list[tuple[torch.Tensor, torch.Tensor]] = []
        for name in sorted(set().union(*masks)):
            param = self.params[name]
            stacked = torch.stack([m[name] for m in masks]).to(device=param.device, dtype=param.dtype)
            self.masked.append((param, stacked))

    def parameters(self) -> list[torch.Tensor]:
        """The stacked parameters that train."""
        return [p for p in self.params.values() if p.requires_grad]

    def apply_masks(self) -> None:
        """Zero every pruned weight of every model."""
        if self.masked:
            with torch.no_grad():
                torch._foreach_mul_([p for p, _ in self.masked], [m for _, m in self.masked])

    def _logits(self, images: torch.Tensor, shared: bool) -> torch.Tensor:
        """Logits ``(K, B, classes)``."""
        call = lambda p, b, x: functional_call(self.base, (p, b), (x,))
        return vmap(call, in_dims=(0, 0, None if shared else 0))(self.params, self.buffers, images)

    def losses(self, images: torch.Tensor, labels: torch.Tensor, shared: bool) -> torch.Tensor:
        """Each model's mean cross-entropy, shape ``(K,)``."""
        logits = self._logits(images, shared)
        labels = labels.expand(self.count, -1) if shared else labels
        return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none").view(self.count, -1).mean(1)

    def evaluate(self, images: torch.Tensor, labels: torch.Tensor, data: DeviceData,
                 shared: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Each model's mean loss and accuracy on a split, shape ``(K,)``."""
        def sums(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            logits = self._logits(x, shared)
            y = y.expand(self.count, -1) if shared else y
            loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(self.count, -1).sum(1)
            return loss, (logits.argmax(-1) == y).sum(1)

        return _evaluate(sums, self.count, images, labels, data)

    def state(self) -> dict[str, torch.Tensor]:
        """The stacked parameters."""
        return dict(self.params)

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        """Copy saved stacked parameters in."""
        with torch.no_grad():
            for name, tensor in state.items():
                self.params[name].copy_(tensor)

    def module_state(self, index: int) -> dict[str, torch.Tensor]:
        """Model ``index``'s parameters and buffers, in its state dict's order."""
        stacked = {**self.params, **self.buffers}
        return {name: stacked[name][index].detach().clone() for name in self.base.state_dict()}

    def finish(self) -> None:
        """Copy each model's trained weights back into its module."""
        with torch.no_grad():
            for index, module in enumerate(self.modules):
                for name, param in module.named_parameters():
                    param.copy_(self.params[name][index])


class ModuleStack:
    """One network called as a module, trained in place: BatchNorm, dropout, bf16 autocast."""

    count = 1

    def __init__(self, module: nn.Module, masks: dict[str, torch.Tensor], precision: str):
        self.module = module
        self.precision = precision
        self.apply_masks = MaskApplier(module, masks)
        module.train()

    def parameters(self) -> list[torch.Tensor]:
        """The module's parameters that train."""
        return [p for p in self.module.parameters() if p.requires_grad]

    def _autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.precision == "bf16":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def losses(self, images: torch.Tensor, labels: torch.Tensor, shared: bool) -> torch.Tensor:
        """The mean cross-entropy of the batch, shape ``(1,)``."""
        images, labels = _own_batch(images, labels, shared)
        with self._autocast(images.device):
            return F.cross_entropy(self.module(images).float(), labels).unsqueeze(0)

    def evaluate(self, images: torch.Tensor, labels: torch.Tensor, data: DeviceData,
                 shared: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean loss and accuracy on a split, shape ``(1,)``, in evaluation mode."""
        images, labels = _own_batch(images, labels, shared)

        def sums(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            with self._autocast(x.device):
                logits = self.module(x)
            return F.cross_entropy(logits.float(), y, reduction="sum"), (logits.argmax(1) == y).sum()

        self.module.eval()
        try:
            return _evaluate(sums, 1, images, labels, data)
        finally:
            self.module.train()

    def state(self) -> dict[str, torch.Tensor]:
        """The module's state dict."""
        return self.module.state_dict()

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        """Load a saved state dict into the module."""
        self.module.load_state_dict(state)

    def module_state(self, index: int) -> dict[str, torch.Tensor]:
        """A copy of the module's state dict."""
        return {name: t.detach().clone() for name, t in self.module.state_dict().items()}

    def finish(self) -> None:
        """Nothing to do: the module trained in place."""


def _own_batch(images: torch.Tensor, labels: torch.Tensor, shared: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The one model's images and labels, from a shared batch or from a stack of one batch."""
    return (images, labels) if shared else (images[0], labels[0])
