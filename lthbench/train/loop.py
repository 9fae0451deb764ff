"""Train one (masked) network with device-resident data, evaluating as it goes."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lthbench.train.checkpoint import TrainingHooks
from lthbench.train.data import DeviceData
from lthbench.masks import MaskApplier
from lthbench.config.settings import Training
from lthbench.train.stack import EVAL_BATCH, SingleStack, can_batch, evaluate_stack, per_model_losses


@dataclass
class Curves:
    """Metrics at each evaluation point."""

    iteration: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)


@dataclass
class TrainResult:
    """What one training run measured."""

    curves: Curves
    diverged: bool
    iterations: int
    wall_time: float

    @property
    def early_stop_index(self) -> int:
        """Index of the evaluation with the lowest validation loss (the paper's early-stop criterion)."""
        losses = [v if math.isfinite(v) else math.inf for v in self.curves.val_loss]
        return min(range(len(losses)), key=losses.__getitem__) if losses else -1

    def summary(self) -> dict[str, float | int | None]:
        """Early-stop iteration and accuracies, and the final accuracy."""
        curves, index = self.curves, self.early_stop_index
        if index < 0:
            return {"early_stop_iteration": None, "early_stop_test_accuracy": None,
                    "early_stop_val_loss": None, "final_test_accuracy": None}
        return {
            "early_stop_iteration": curves.iteration[index],
            "early_stop_test_accuracy": curves.test_accuracy[index],
            "early_stop_val_loss": curves.val_loss[index],
            "final_test_accuracy": curves.test_accuracy[-1],
        }


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


def make_optimizer(training: Training, parameters: list[nn.Parameter]) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov, weight decay) or Adam, as configured.

    On a GPU the fused implementation (one kernel for all parameters), else
    the multi-tensor (``foreach``) one, which torch uses by default only on
    GPUs (on a CPU it made a LeNet-300-100 Adam step about 13 % faster than
    the per-tensor loop). Both update element by element, so one optimizer
    over stacked models updates each model as its own optimizer would. The
    CPU keeps ``foreach``: its fused kernels were faster there (a
    LeNet-300-100 Adam step 0.09 against 0.26 ms on 2 cores) but round
    differently depending on where an element sits in a tensor, so stacked
    and lone runs stopped agreeing bit for bit.
    """
    if parameters and all(p.device.type == "cuda" for p in parameters):
        try:
            return _optimizer(training, parameters, fused=True)
        except RuntimeError:  # no fused kernel for these parameters
            pass
    return _optimizer(training, parameters, foreach=True)


def _optimizer(training: Training, parameters: list[nn.Parameter], **implementation: bool) -> torch.optim.Optimizer:
    if training.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=training.lr, betas=training.betas,
                                weight_decay=training.weight_decay, **implementation)
    return torch.optim.SGD(parameters, lr=training.lr, momentum=training.momentum,
                           nesterov=training.nesterov, weight_decay=training.weight_decay, **implementation)


class _Forward:
    """How one run computes its logits and losses.

    A network that can train stacked (:func:`lthbench.train.stack.can_batch`)
    in fp32 computes as a stack of one, so that its results do not depend
    on whether it trained alone or in a batched group; any other network
    (BatchNorm, dropout, bf16 autocast) calls its module.
    """

    def __init__(self, model: nn.Module, precision: str):
        self.model = model
        self.precision = precision
        self.stack = SingleStack(model) if precision == "fp32" and can_batch(model) else None

    def loss(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The mean cross-entropy of one training batch."""
        if self.stack is not None:
            return per_model_losses(self.stack.forward(images), labels.unsqueeze(0))[0]
        with _autocast(images.device, self.precision):
            return F.cross_entropy(self.model(images).float(), labels)

    def evaluate(self, images: torch.Tensor, labels: torch.Tensor,
                 data: DeviceData) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean loss and accuracy over a whole split, as device tensors (no host sync)."""
        if self.stack is not None:
            loss, accuracy = evaluate_stack(self.stack, images, labels, data, shared=True)
            return loss[0], accuracy[0]
        return evaluate(self.model, images, labels, data, self.precision)


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, data: DeviceData,
             precision: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean loss and accuracy over a whole split, as device tensors (no host sync)."""
    model.eval()
    loss_sum = torch.zeros((), device=images.device)
    correct = torch.zeros((), device=images.device)
    for start in range(0, len(labels), EVAL_BATCH):
        x = data.normalize(images[start : start + EVAL_BATCH])
        y = labels[start : start + EVAL_BATCH]
        with _autocast(images.device, precision):
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
    model.train()
    return loss_sum / len(labels), correct / len(labels)


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _fingerprint(model: nn.Module, start_iteration: int, total: int) -> dict[str, Any]:
    """What a checkpoint must match to be resumed by this training: length and parameter shapes."""
    shapes = [[name, list(p.shape)] for name, p in model.state_dict().items()]
    return {"start_iteration": start_iteration, "total": total, "shapes": shapes}


def train(
    model: nn.Module,
    masks: dict[str, torch.Tensor],
    data: DeviceData,
    training: Training,
    start_iteration: int = 0,
    save_at: Callable[[int], bool] = lambda iteration: False,
    on_save: Callable[[int, nn.Module], None] = lambda iteration, model: None,
    hooks: TrainingHooks | None = None,
    stop_at: int | None = None,
) -> TrainResult:
    """Train ``model`` in place from ``start_iteration`` to the configured length.

    Masks are applied before the first step and after every optimizer step, so
    pruned weights are exactly zero in every forward pass whatever the
    optimizer does to them. ``on_save(k, model)`` is called before iteration
    ``k`` when ``save_at(k)`` is true (used to keep θ_k for rewinding).
    Training stops early, marked diverged, when the loss stops being finite.

    ``hooks`` (default: none) receive
    progress and log lines; with a checkpointer, training resumes from its
    checkpoint and saves one every ``every`` iterations. A resumed run gives
    the same numbers as an uninterrupted one.

    ``stop_at`` ends training before iteration ``stop_at`` (``on_save`` is
    still called there); learning rates and data order stay those of the
    full training, so the model is the full run's state after ``stop_at``
    iterations.
    """
    hooks = hooks or TrainingHooks()
    device = data.train_images.device
    batch_size = training.batch_size
    per_epoch = data.iterations_per_epoch(batch_size)
    total = total_iterations(training, per_epoch)
    apply_masks = MaskApplier(model, masks)
    apply_masks()
    forward = _Forward(model, training.precision)
    optimizer = make_optimizer(training, [p for p in model.parameters() if p.requires_grad])
    fingerprint = _fingerprint(model, start_iteration, total)
    curves = Curves()
    loss_sum = torch.zeros((), device=device)
    losses_since_eval, elapsed, first = 0, 0.0, start_iteration
    saved = hooks.checkpointer.load(fingerprint) if hooks.checkpointer else None
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        curves = Curves(**saved["curves"])
        loss_sum = saved["loss_sum"].to(device)
        losses_since_eval, elapsed, first = saved["losses_since_eval"], saved["elapsed"], saved["iteration"]
        hooks.log(f"resumed from the checkpoint at iteration {first}")
    diverged = False
    started = time.perf_counter()
    model.train()
    order, order_epoch = None, -1
    end = total if stop_at is None else min(stop_at, total)
    for iteration in range(first, end):
        if save_at(iteration):
            on_save(iteration, model)
        epoch, step = divmod(iteration, per_epoch)
        if epoch != order_epoch:
            order, order_epoch = data.epoch_order(epoch), epoch
        images, labels = data.training_batch(order, step, batch_size, iteration)
        for group in optimizer.param_groups:
            group["lr"] = training.lr * lr_factor(training, iteration, total)
        loss = forward.loss(images, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        apply_masks()
        loss_sum += loss.detach()
        losses_since_eval += 1
        done = iteration + 1
        if done % training.eval_every == 0 or done == total:
            train_loss = (loss_sum / losses_since_eval).item()
            val_loss, val_acc = forward.evaluate(data.val_images, data.val_labels, data)
            _, test_acc = forward.evaluate(data.test_images, data.test_labels, data)
            curves.iteration.append(done)
            curves.train_loss.append(train_loss)
            curves.val_loss.append(val_loss.item())
            curves.val_accuracy.append(val_acc.item())
            curves.test_accuracy.append(test_acc.item())
            loss_sum.zero_()
            losses_since_eval = 0
            hooks.log(f"iteration {done}/{total}: train loss {train_loss:.4f}, val loss {curves.val_loss[-1]:.4f}, "
                      f"val accuracy {curves.val_accuracy[-1]:.4f}, test accuracy {curves.test_accuracy[-1]:.4f}")
            if not (math.isfinite(train_loss) and math.isfinite(curves.val_loss[-1])):
                diverged = True
                break
        hooks.on_progress(done, total, curves.train_loss[-1] if curves.train_loss else None)
        if hooks.checkpointer and hooks.checkpointer.due(done, total):
            hooks.checkpointer.save({
                "fingerprint": fingerprint, "iteration": done, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "curves": vars(curves), "loss_sum": loss_sum,
                "losses_since_eval": losses_since_eval, "elapsed": elapsed + time.perf_counter() - started,
            })
    if save_at(end):
        on_save(end, model)
    return TrainResult(curves, diverged, total, elapsed + time.perf_counter() - started)
