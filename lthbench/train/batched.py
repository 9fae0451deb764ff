"""Train K networks of one architecture in a single step with ``torch.func`` (stacked parameters + ``vmap``).

Small networks leave a GPU idle between kernel launches; stacking K models
turns K small launches into one larger one. Each model keeps its own initial
weights, mask, data order (its own :class:`DeviceData`) and optimizer state:
the optimizers are element-wise (SGD with momentum and weight decay, Adam), so
one optimizer over the stacked tensors updates every model exactly as K
separate optimizers would, and the summed loss gives each model the gradient
of its own mean loss.

A run that trains alone computes through the same stacked arithmetic, as a
stack of one (:mod:`lthbench.train.stack`), so on a CPU in fp32 a batched run
records bit for bit what it records alone, with one exception: convolutions
of models that each see their own batch (the seeds of one cell) run as one
grouped convolution, whose sums are ordered differently from a lone
convolution's; those runs agree to rounding (about 1e-7 relative per step).
On a GPU, kernels may pick other algorithms for other batch sizes, so the
agreement is to rounding there too.

Networks with BatchNorm or active dropout are not batched (see
:func:`lthbench.train.stack.can_batch`).

On a GPU, how many models train at once is bounded by a memory budget
(:func:`trials_that_fit_device`).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lthbench.train.checkpoint import Checkpointer
from lthbench.train.data import DeviceData
from lthbench.config.settings import Training
from lthbench.train.stack import EVAL_BATCH, StackedModels, evaluate_stack, per_model_losses
from lthbench.train.loop import Curves, TrainResult, lr_factor, make_optimizer, total_iterations

#: The most models one stacked training step holds.
MAX_TRIALS = 64
#: The share of the free GPU memory a stacked training may fill.
MEMORY_FRACTION = 0.5


def train_batched(modules: Sequence[nn.Module], masks: Sequence[dict[str, torch.Tensor]],
                  datas: Sequence[DeviceData], training: Training, start_iteration: int = 0,
                  on_progress: Callable[[int, int], None] = lambda done, total: None,
                  checkpointer: Checkpointer | None = None,
                  log: Callable[[str], None] = lambda line: None) -> list[TrainResult]:
    """Train K modules together; the same results, per model, as :func:`lthbench.train.loop.train` on each.

    All modules share ``training`` and ``start_iteration``. When every model
    uses the same :class:`DeviceData` (the controls of one level: same seed),
    one batch feeds all models; otherwise each draws from its own data.
    ``on_progress(done, total)`` is called after every iteration. With a
    ``checkpointer``, training resumes from its checkpoint (one for the
    whole stack) and saves one every ``checkpointer.every`` iterations; a
    resumed stack gives the same numbers as an uninterrupted one.
    """
    shared = all(d is datas[0] for d in datas)
    data0 = datas[0]
    stack = StackedModels(modules, masks)
    stack.apply_masks()
    optimizer = make_optimizer(training, list(stack.params.values()))
    per_epoch = data0.iterations_per_epoch(training.batch_size)
    total = total_iterations(training, per_epoch)
    k = stack.count
    curves = [Curves() for _ in range(k)]
    loss_sum = torch.zeros(k, device=data0.train_images.device)
    since_eval, diverged = 0, [False] * k
    first, elapsed = start_iteration, 0.0
    fingerprint = {"start_iteration": start_iteration, "total": total, "models": k,
                   "shapes": [[name, list(p.shape)] for name, p in stack.params.items()]}
    saved = checkpointer.load(fingerprint) if checkpointer else None
    if saved is not None:
        with torch.no_grad():
            for name, tensor in saved["params"].items():
                stack.params[name].copy_(tensor)
        optimizer.load_state_dict(saved["optimizer"])
        curves = [Curves(**c) for c in saved["curves"]]
        loss_sum = saved["loss_sum"].to(loss_sum.device)
        since_eval, diverged = saved["since_eval"], list(saved["diverged"])
        first, elapsed = saved["iteration"], saved["elapsed"]
        log(f"resumed the batched group of {k} runs from its checkpoint at iteration {first}")
    val, test = _split(datas, shared, "val"), _split(datas, shared, "test")  # stacked once, not per evaluation
    orders, order_epoch = None, -1
    started = time.perf_counter()
    for iteration in range(first, total):
        epoch, step = divmod(iteration, per_epoch)
        if epoch != order_epoch:
            orders = [d.epoch_order(epoch) for d in (datas[:1] if shared else datas)]
            order_epoch = epoch
        batches = [d.training_batch(o, step, training.batch_size, iteration)
                   for d, o in zip(datas[:1] if shared else datas, orders)]
        images = batches[0][0] if shared else torch.stack([b[0] for b in batches])
        labels = batches[0][1].expand(k, -1) if shared else torch.stack([b[1] for b in batches])
        for group in optimizer.param_groups:
            group["lr"] = training.lr * lr_factor(training, iteration, total)
        logits = stack.forward(images, shared)
        losses = per_model_losses(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        optimizer.step()
        stack.apply_masks()
        loss_sum += losses.detach()
        since_eval += 1
        done = iteration + 1
        if done % training.eval_every == 0 or done == total:
            train_loss = (loss_sum / since_eval).tolist()
            val_loss, val_acc = (t.tolist() for t in evaluate_stack(stack, *val, data0, shared))
            _, test_acc = (t.tolist() for t in evaluate_stack(stack, *test, data0, shared))
            for i in range(k):
                if diverged[i]:
                    continue
                c = curves[i]
                c.iteration.append(done)
                c.train_loss.append(train_loss[i])
                c.val_loss.append(val_loss[i])
                c.val_accuracy.append(val_acc[i])
                c.test_accuracy.append(test_acc[i])
                diverged[i] = not (math.isfinite(train_loss[i]) and math.isfinite(val_loss[i]))
            loss_sum.zero_()
            since_eval = 0
            if all(diverged):
                break
        on_progress(done, total)
        if checkpointer and checkpointer.due(done, total):
            checkpointer.save({
                "fingerprint": fingerprint, "iteration": done, "params": dict(stack.params),
                "optimizer": optimizer.state_dict(), "curves": [vars(c) for c in curves], "loss_sum": loss_sum,
                "since_eval": since_eval, "diverged": diverged, "elapsed": elapsed + time.perf_counter() - started,
            })
    stack.unstack_into(modules)
    wall = (elapsed + time.perf_counter() - started) / k
    return [TrainResult(curves[i], diverged[i], total, wall) for i in range(k)]


def _split(datas: Sequence[DeviceData], shared: bool, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    images = [getattr(d, f"{name}_images") for d in datas]
    labels = [getattr(d, f"{name}_labels") for d in datas]
    if shared:
        return images[0], labels[0]
    return torch.stack(images), torch.stack(labels)


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
