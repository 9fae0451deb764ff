"""``lthbench bench``: lthbench's trainer against a plain PyTorch loop, measured in the same process.

The reference is what most pruning code does: a torchvision-style data set
with per-sample transforms behind a DataLoader with worker processes, one
model at a time. lthbench is measured twice: one model with its trainer, and
K models trained as one stacked model (:mod:`lthbench.train.stack`) on one shared
batch, as the controls of one sparsity level train; the batched side counts
model-steps (K per step). All sides train the same architecture on the same
data at the same batch size; each is warmed up first, and throughput is
taken over the timed steps only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from lthbench.config.settings import Training
from lthbench.masks import full_masks
from lthbench.protocols import Network
from lthbench.registry import Registry, default_registry
from lthbench.run.threads import apply_threads, usable_cores
from lthbench.train.checkpoint import TrainingHooks
from lthbench.train.data import SeedTag, prepare, seeded_generator
from lthbench.train.loop import train
from lthbench.train.optim import make_optimizer
from lthbench.train.stack import can_batch, make_stack

#: (architecture, data set, batch size, optimizer settings) of each case.
CASES = {
    "lenet_300_100": ("mnist", 60, dict(optimizer="adam", lr=1.2e-3)),
    "conv6": ("cifar10-jpeg", 60, dict(optimizer="adam", lr=3e-4)),
    "resnet20": ("cifar10-jpeg", 128, dict(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4)),
    "vgg16": ("cifar10-jpeg", 128, dict(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4)),
}


@dataclass
class Measurement:
    """Throughput of one side of one case; a batched side counts each model's step (model-steps)."""

    steps_per_second: float
    images_per_second: float
    peak_memory_mib: float | None


def _network(registry: Registry, arch_name: str, seed: int, device: torch.device) -> Network:
    dataset = registry.dataset(CASES[arch_name][0])
    arch = registry.architecture(arch_name)
    network = arch.build(dataset.input_shape, dataset.num_classes, arch.Params())
    arch.initialize(network.module, seeded_generator(SeedTag.INIT, seed))
    network.module.to(device)
    return network


class PerSampleDataset(torch.utils.data.Dataset):
    """uint8 images transformed one at a time, as torchvision's own data set classes do."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: v2.Transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.images[index]), self.labels[index]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def _reset_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def reference_loop(registry: Registry, arch_name: str, training: Training, data_root: Path, device: torch.device,
                   warmup: int, steps: int, workers: int) -> Measurement:
    """A plain PyTorch training loop: DataLoader with workers and per-sample transforms."""
    dataset = registry.dataset(CASES[arch_name][0])
    split = dataset.load(data_root, train=True, download=False)
    augment = [v2.RandomCrop(dataset.input_shape[1:], padding=4), v2.RandomHorizontalFlip()] if dataset.default_augment else []
    transform = v2.Compose([*augment, v2.ToDtype(torch.float32, scale=True), v2.Normalize(dataset.mean, dataset.std)])
    loader = DataLoader(PerSampleDataset(split.images, split.labels, transform), batch_size=training.batch_size,
                        shuffle=True, drop_last=True, num_workers=workers, pin_memory=device.type == "cuda",
                        persistent_workers=workers > 0, generator=seeded_generator(SeedTag.REFERENCE))
    model = _network(registry, arch_name, 0, device).module.train()
    optimizer = make_optimizer(training, list(model.parameters()))
    _reset_memory(device)
    done, started = 0, 0.0
    while done < warmup + steps:
        for images, labels in loader:
            if done == warmup:
                _sync(device)
                started = time.perf_counter()
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            loss = F.cross_entropy(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            done += 1
            if done == warmup + steps:
                break
    _sync(device)
    elapsed = time.perf_counter() - started
    return Measurement(steps / elapsed, steps * training.batch_size / elapsed, _peak_memory(device))


def lthbench_loop(registry: Registry, arch_name: str, training: Training, data_root: Path, device: torch.device,
                  warmup: int, steps: int) -> Measurement:
    """lthbench's own trainer, one model on device-resident data (masks applied every step, as in a pruned run)."""
    return batched_loop(registry, arch_name, training, data_root, device, warmup, steps, 1)


def batched_loop(registry: Registry, arch_name: str, training: Training, data_root: Path, device: torch.device,
                 warmup: int, steps: int, trials: int, ready: Callable[[], Any] | None = None) -> Measurement | None:
    """``trials`` networks (each with its own initial weights and masks) trained stacked on one shared batch.

    ``None`` when more than one network cannot train stacked (BatchNorm).
    ``ready`` is called when everything is built, just before training.
    """
    networks = [_network(registry, arch_name, seed, device) for seed in range(trials)]
    if trials > 1 and not can_batch(networks[0].module):
        return None
    data = prepare(registry.dataset(CASES[arch_name][0]), data_root, False, training, 0, device)
    masks = [full_masks(n) for n in networks]
    clock = Clock(device, warmup, steps)
    _reset_memory(device)
    stack = make_stack([n.module for n in networks], masks, training.precision)
    if ready is not None:
        ready()
    train(stack, [data] * trials, clock.training(training), hooks=clock.hooks())
    return clock.measurement(training.batch_size, trials)


class Clock:
    """Times a trainer from the end of step ``warmup`` to the end of step ``warmup + steps`` (after a device sync).

    It is read through the trainer's progress hook, so neither start-up nor
    the final evaluation (one, after the last step) is counted.
    """

    def __init__(self, device: torch.device, warmup: int, steps: int):
        self.device, self.warmup, self.steps = device, warmup, steps
        self.times: dict[int, float] = {}

    def training(self, training: Training) -> Training:
        length = self.warmup + self.steps + 1
        return dataclasses.replace(training, iterations=length, eval_every=length)

    def hooks(self) -> TrainingHooks:
        """Training hooks that read the clock after every step."""
        return TrainingHooks(on_progress=lambda done, total, losses: self._tick(done))

    def _tick(self, done: int) -> None:
        if done in (self.warmup, self.warmup + self.steps):
            _sync(self.device)
            self.times[done] = time.perf_counter()

    def measurement(self, batch_size: int, models: int) -> Measurement:
        elapsed = self.times[self.warmup + self.steps] - self.times[self.warmup]
        model_steps = self.steps * models
        return Measurement(model_steps / elapsed, model_steps * batch_size / elapsed, _peak_memory(self.device))


def bench_command(registry: Registry, data_root: Path, device: torch.device, models: list[str], steps: int,
                  warmup: int, workers: int, trials: int, print_line=print) -> list[dict]:
    """Measure every case and print one line per case with lthbench's ratios to the reference (``warmup`` >= 1).

    ``trials`` is K of the batched side; a case whose network cannot train
    stacked prints ``-`` there.
    """
    warmup = max(warmup, 1)
    rows = []
    print_line(f"device: {device}; {steps} timed steps after {warmup} warm-up steps; reference DataLoader workers: "
               f"{workers}; batched: {trials} models on one shared batch, counted in model-steps")
    print_line(f"{'model':<15} {'batch':>5} {'ref steps/s':>12} {'lthbench steps/s':>17} {'ratio':>7} "
               f"{'batched model-steps/s':>22} {'ratio':>7} {'ref img/s':>10} {'lthbench img/s':>15} "
               f"{'ref MiB':>8} {'lthbench MiB':>13} {'batched MiB':>12}")
    for name in models:
        dataset_name, batch, optimizer = CASES[name]
        # small validation and test splits: evaluation is not what is measured here
        training = Training(batch_size=batch, validation_size=1000, test_subset=1000, **optimizer)
        reference = reference_loop(registry, name, training, data_root, device, warmup, steps, workers)
        ours = lthbench_loop(registry, name, training, data_root, device, warmup, steps)
        batched = batched_loop(registry, name, training, data_root, device, warmup, steps, trials)
        ratio = ours.steps_per_second / reference.steps_per_second
        batched_ratio = batched.steps_per_second / reference.steps_per_second if batched else None
        memory = lambda m: "-" if m is None or m.peak_memory_mib is None else f"{m.peak_memory_mib:.0f}"
        batched_text = (f"{batched.steps_per_second:>22.1f} {batched_ratio:>6.2f}x" if batched
                        else f"{'-':>22} {'-':>7}")
        print_line(f"{name:<15} {batch:>5} {reference.steps_per_second:>12.1f} {ours.steps_per_second:>17.1f} "
                   f"{ratio:>6.2f}x {batched_text} {reference.images_per_second:>10.0f} "
                   f"{ours.images_per_second:>15.0f} {memory(reference):>8} {memory(ours):>13} {memory(batched):>12}")
        rows.append({"model": name, "dataset": dataset_name, "batch_size": batch, "device": str(device),
                     "reference": vars(reference), "lthbench": vars(ours), "ratio": ratio,
                     "batched": vars(batched) if batched else None, "trials": trials,
                     "batched_ratio": batched_ratio})
    return rows


def _busy() -> None:
    """One competing process: a pure-Python loop that keeps one core busy until terminated."""
    while True:
        pass


@contextlib.contextmanager
def contention(busy: bool) -> Iterator[None]:
    """With ``busy``, one other process keeps one core busy while the block runs (``--contend``)."""
    if not busy:
        yield
        return
    process = multiprocessing.get_context("spawn").Process(target=_busy, daemon=True)
    process.start()
    try:
        yield
    finally:
        process.terminate()
        process.join()


def _chain(arch_name: str, data_root: Path, threads: int, trials: int, warmup: int, steps: int,
           start: Any, results: Any) -> None:
    """One parallel chain of the chains table (a spawned process): ``trials`` models stacked, timed like the others."""
    apply_threads(threads)
    dataset_name, batch, optimizer = CASES[arch_name]
    training = Training(batch_size=batch, validation_size=1000, test_subset=1000, **optimizer)
    measured = batched_loop(default_registry(), arch_name, training, data_root, torch.device("cpu"), warmup, steps,
                            trials, ready=start.wait)  # every chain of a configuration trains at the same time
    results.put(measured.steps_per_second)


def chains_and_threads(arch_name: str, data_root: Path, jobs: int, threads: int, trials: int, warmup: int,
                       steps: int) -> float:
    """Model-steps per second of ``jobs`` processes at once, each with ``threads`` threads and a stack of ``trials``."""
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(jobs), context.Queue()
    processes = [context.Process(target=_chain, args=(arch_name, data_root, threads, trials, warmup, steps,
                                                      start, results)) for _ in range(jobs)]
    for process in processes:
        process.start()
    try:
        total = sum(results.get(timeout=3600) for _ in processes)
    finally:
        for process in processes:
            process.join(timeout=60)
            if process.is_alive():
                process.kill()
    return total


def chains_table(registry: Registry, data_root: Path, models: list[str], steps: int, warmup: int,
                 stacks: list[int], print_line=print) -> list[dict]:
    """CPU throughput of chains × threads × stack, each as a ratio to one chain with torch's default threads.

    Configurations: one chain with every usable core (torch's default), one
    chain with one thread, and one chain per core with one thread each; each
    with stacks of ``stacks`` models where the network can stack.
    """
    cores = usable_cores()
    configurations = sorted({(1, cores), (1, 1), (cores, 1)}, key=lambda c: (c[0], -c[1]))
    print_line(f"chains and threads on the CPU: {cores} usable cores; {steps} timed steps after {warmup} warm-up "
               f"steps per chain; model-steps/s of all chains together, ratio to 1 chain x {cores} threads x stack 1")
    print_line(f"{'model':<15} {'chains':>6} {'threads':>7} {'stack':>5} {'model-steps/s':>14} {'ratio':>7}")
    rows = []
    for name in models:
        stackable = can_batch(_network(registry, name, 0, torch.device("cpu")).module)
        baseline = None
        for trials in (stacks if stackable else [1]):
            for jobs, threads in configurations:
                rate = chains_and_threads(name, data_root, jobs, threads, trials, warmup, steps)
                if baseline is None:
                    baseline = rate
                rows.append({"model": name, "chains": jobs, "threads": threads, "stack": trials,
                             "model_steps_per_second": rate, "ratio": rate / baseline})
                print_line(f"{name:<15} {jobs:>6} {threads:>7} {trials:>5} {rate:>14.1f} {rate / baseline:>6.2f}x")
    return rows
