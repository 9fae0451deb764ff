"""The training loop: K masked networks (K >= 1) trained as one :class:`~lthbench.train.stack.Stack`."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import torch

from lthbench.config.settings import Training
from lthbench.train.checkpoint import TrainingHooks
from lthbench.train.data import Batches, DeviceData
from lthbench.train.optim import lr_factor, make_optimizer, total_iterations
from lthbench.train.result import Curves, TrainResult
from lthbench.train.stack import Stack


class _Progress:
    """The loop's state between two iterations: what a checkpoint saves besides weights and optimizer."""

    def __init__(self, count: int, start: int, device: torch.device):
        self.curves = [Curves() for _ in range(count)]
        self.loss_sum = torch.zeros(count, device=device)
        self.since_eval, self.diverged = 0, [False] * count
        self.iteration, self.elapsed = start, 0.0
        #: Patience: each model's lowest validation loss, evaluations since it, the iteration it stopped at
        #: (``None`` while it trains) and its weights from then (kept as they were while the stack goes on).
        self.best, self.since_best = [math.inf] * count, [0] * count
        self.stopped: list[int | None] = [None] * count
        self.frozen: dict[int, dict[str, torch.Tensor]] = {}

    def saved(self) -> dict[str, Any]:
        """The state as checkpoint entries."""
        return {"iteration": self.iteration, "curves": [vars(c) for c in self.curves], "loss_sum": self.loss_sum,
                "since_eval": self.since_eval, "diverged": self.diverged, "elapsed": self.elapsed,
                "best": self.best, "since_best": self.since_best, "stopped": self.stopped, "frozen": self.frozen}

    def restore(self, saved: dict[str, Any]) -> None:
        """Take the state from checkpoint entries."""
        self.curves = [Curves(**c) for c in saved["curves"]]
        self.loss_sum = saved["loss_sum"].to(self.loss_sum.device)
        self.since_eval, self.diverged = saved["since_eval"], list(saved["diverged"])
        self.iteration, self.elapsed = saved["iteration"], saved["elapsed"]
        if "stopped" in saved:
            self.best, self.since_best = list(saved["best"]), list(saved["since_best"])
            self.stopped, self.frozen = list(saved["stopped"]), dict(saved["frozen"])

    def ended(self, index: int) -> bool:
        """Whether model ``index`` trains no more: diverged, or stopped by patience."""
        return self.diverged[index] or self.stopped[index] is not None

    def latest_losses(self) -> list[float | None]:
        """Each model's latest training loss, ``None`` before the first evaluation."""
        return [c.train_loss[-1] if c.train_loss else None for c in self.curves]


def train(stack: Stack, datas: Sequence[DeviceData], training: Training, *, start: int = 0,
          hooks: TrainingHooks = TrainingHooks()) -> list[TrainResult]:
    """Train the stack's models from iteration ``start`` to the configured length; one result per model.

    Model ``i`` trains on ``datas[i]`` (one shared batch when all are the
    same object, see :class:`~lthbench.train.data.Batches`). Masks are applied
    before the first step and after every optimizer step, so pruned weights
    are exactly zero in every forward pass whatever the optimizer does to
    them. A model whose training or validation loss stops being finite is
    marked diverged and its curve ends there; training ends when every model
    has diverged. With ``hooks.checkpointer``, training resumes from its
    checkpoint and saves one every ``every`` iterations: a resumed training
    gives the same numbers as an uninterrupted one. At the end each module
    holds its model's trained weights.
    """
    batches = Batches(datas, training.batch_size)
    total = total_iterations(training, batches.per_epoch)
    stack.apply_masks()
    optimizer = make_optimizer(training, stack.parameters())
    progress = _Progress(stack.count, start, batches.device)
    fingerprint = {"start_iteration": start, "total": total, "stack": type(stack).__name__,
                   "shapes": [[name, list(t.shape)] for name, t in stack.state().items()]}
    saved = hooks.checkpointer.load(fingerprint) if hooks.checkpointer else None
    if saved is not None:
        stack.load_state(saved["stack"])
        optimizer.load_state_dict(saved["optimizer"])
        progress.restore(saved)
        hooks.log(_resumed(stack.count, progress.iteration))
    snapshots = hooks.snapshots
    end = min(max(snapshots.at), total) if snapshots and snapshots.stop else total
    started = time.perf_counter()
    for iteration in range(progress.iteration, end):
        if snapshots and iteration in snapshots.at:
            snapshots.keep(iteration, stack)
        images, labels = batches.training_batch(iteration)
        for group in optimizer.param_groups:
            group["lr"] = training.lr * lr_factor(training, iteration, total)
        losses = stack.losses(images, labels, batches.shared)
        optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        optimizer.step()
        stack.apply_masks()
        progress.loss_sum += losses.detach()
        progress.since_eval += 1
        done = iteration + 1
        if done % training.eval_every == 0 or done == total:
            _evaluate(stack, batches, progress, done, total, hooks)
            _stop_without_progress(stack, progress, training.patience, done, max(snapshots.at) if snapshots else 0)
            if all(progress.ended(i) for i in range(stack.count)):
                hooks.on_progress(total, total, progress.latest_losses())
                break
        hooks.on_progress(done, total, progress.latest_losses())
        if hooks.checkpointer and hooks.checkpointer.due(done, total):
            progress.iteration, progress.elapsed = done, progress.elapsed + time.perf_counter() - started
            started = time.perf_counter()
            hooks.checkpointer.save({"fingerprint": fingerprint, "stack": stack.state(),
                                     "optimizer": optimizer.state_dict(), **progress.saved()})
    if snapshots and end in snapshots.at:
        snapshots.keep(end, stack)
    _restore_stopped(stack, progress)
    stack.finish()
    wall = (progress.elapsed + time.perf_counter() - started) / stack.count
    return [TrainResult(curves, diverged, total, wall, stopped)
            for curves, diverged, stopped in zip(progress.curves, progress.diverged, progress.stopped)]


def _stop_without_progress(stack: Stack, progress: _Progress, patience: int, done: int, last_snapshot: int) -> None:
    """With ``patience``, stop each model whose validation loss has not reached a new minimum for that many evaluations.

    A stopped model's weights are kept as they are now: in a stack that goes
    on, :func:`_restore_stopped` puts them back at the end, so its record and
    weights are those of the same run trained alone. No model stops before
    the last rewinding snapshot its training keeps.
    """
    if not patience:
        return
    for i, curves in enumerate(progress.curves):
        if progress.ended(i):
            continue
        if curves.val_loss[-1] < progress.best[i]:
            progress.best[i], progress.since_best[i] = curves.val_loss[-1], 0
        else:
            progress.since_best[i] += 1
        if progress.since_best[i] >= patience and done >= last_snapshot:
            progress.stopped[i] = done
            if stack.count > 1:
                progress.frozen[i] = {name: t[i].detach().clone() for name, t in stack.state().items()}


def _restore_stopped(stack: Stack, progress: _Progress) -> None:
    """Put back the weights each stopped model of a stack had when it stopped."""
    state = stack.state()
    with torch.no_grad():
        for i, frozen in progress.frozen.items():
            for name, tensor in frozen.items():
                state[name][i].copy_(tensor)


def _resumed(count: int, iteration: int) -> str:
    if count == 1:
        return f"resumed from the checkpoint at iteration {iteration}"
    return f"resumed the batched group of {count} runs from its checkpoint at iteration {iteration}"


def _evaluate(stack: Stack, batches: Batches, progress: _Progress, done: int, total: int,
              hooks: TrainingHooks) -> None:
    """Append an evaluation to the curve of every model that has not diverged, and mark the ones that do now."""
    train_loss = (progress.loss_sum / progress.since_eval).tolist()
    val_loss, val_accuracy = (t.tolist() for t in stack.evaluate(*batches.val, batches.first, batches.shared))
    _, test_accuracy = (t.tolist() for t in stack.evaluate(*batches.test, batches.first, batches.shared))
    for i, curves in enumerate(progress.curves):
        if progress.ended(i):
            continue
        curves.iteration.append(done)
        curves.train_loss.append(train_loss[i])
        curves.val_loss.append(val_loss[i])
        curves.val_accuracy.append(val_accuracy[i])
        curves.test_accuracy.append(test_accuracy[i])
        progress.diverged[i] = not (math.isfinite(train_loss[i]) and math.isfinite(val_loss[i]))
        hooks.on_evaluation(i, done, {"train_loss": train_loss[i], "val_loss": val_loss[i],
                                      "val_accuracy": val_accuracy[i], "test_accuracy": test_accuracy[i]})
    if stack.count == 1:  # a group's runs share one log line per event, so evaluations go to their records only
        hooks.log(f"iteration {done}/{total}: train loss {train_loss[0]:.4f}, val loss {val_loss[0]:.4f}, "
                  f"val accuracy {val_accuracy[0]:.4f}, test accuracy {test_accuracy[0]:.4f}")
    progress.loss_sum.zero_()
    progress.since_eval = 0
