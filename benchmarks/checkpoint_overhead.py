"""Overhead of checkpointing and of record writing, as a fraction of training time.

For LeNet-300-100 (MNIST-shaped input) and ResNet-20 (CIFAR-shaped input),
in this one process: train without checkpoints (the baseline) and with a
checkpoint every ``--every`` iterations, alternately, ``--repeats`` times,
into a real store in a temporary folder (atomic writes with fsync). Then
time what every finished run writes (mask, trained weights, record) against
the baseline training time, and extrapolate the measured cost of one
save to the runner's default interval. Input data are random images of the right shape:
the cost of saving does not depend on what the network learns.

    python benchmarks/checkpoint_overhead.py [--device cpu] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lthbench.config.settings import Training
from lthbench.masks import full_masks
from lthbench.registry import default_registry
from lthbench.run.scheduler import CHECKPOINT_EVERY
from lthbench.store import Store, save_tensors
from lthbench.train.checkpoint import Checkpointer, TrainingHooks
from lthbench.train.data import DeviceData, SeedTag, seeded_generator
from lthbench.train.loop import train
from lthbench.train.stack import make_stack

#: (architecture, input shape, training iterations, checkpoint interval) on the CPU; a GPU runs 10x the iterations.
CASES = (("lenet_300_100", (1, 28, 28), 600, 100), ("resnet20", (3, 32, 32), 16, 4))


@dataclass(frozen=True)
class TimedCheckpointer(Checkpointer):
    """A checkpointer that also records how long each save took."""

    seconds: list[float] = field(default_factory=list)

    def save(self, state: dict) -> None:
        """Save, timing the call."""
        started = time.perf_counter()
        super().save(state)
        self.seconds.append(time.perf_counter() - started)


def random_data(shape: tuple[int, int, int], device: torch.device, n: int = 3584) -> DeviceData:
    """Random uint8 images and labels, resident on ``device``."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8).to(device)
    labels = torch.randint(0, 10, (n,), generator=g).to(device)
    zero = torch.zeros(1, shape[0], 1, 1, device=device)
    return DeviceData(images[:3072], labels[:3072], images[3072:3328], labels[3072:3328], images[3328:],
                      labels[3328:], zero + 0.5, zero + 0.25, False, 0)


def timed_training(name: str, shape: tuple, training: Training, data: DeviceData, device: torch.device,
                   checkpointer: Checkpointer | None):
    """Seconds to train one freshly initialised network, and the network."""
    arch = default_registry().architecture(name)
    network = arch.build(shape, 10, arch.Params())
    arch.initialize(network.module, seeded_generator(SeedTag.INIT, 0))
    network.module.to(device)
    masks = {k: m.to(device) for k, m in full_masks(network).items()}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    stack = make_stack([network.module], [masks], training.precision)
    (result,) = train(stack, [data], training, hooks=TrainingHooks(checkpointer))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started, network, masks, result


def measure(name: str, shape: tuple, iterations: int, every: int, repeats: int, device: torch.device,
            folder: Path) -> dict[str, float]:
    """Median training times with and without checkpoints, and the cost of a run's final writes."""
    training = Training(optimizer="sgd", lr=0.05, momentum=0.9, batch_size=128, iterations=iterations,
                        eval_every=every, validation_size=1)
    data = random_data(shape, device)
    store = Store(folder / name)
    checkpointer = TimedCheckpointer(store.checkpoint_path("run"), every)
    store.run_dir("run").mkdir(parents=True, exist_ok=True)
    timed_training(name, shape, training, data, device, None)  # warm-up: allocator, kernels, caches
    plain, checkpointed, writes = [], [], []
    for _ in range(repeats):
        seconds, network, masks, result = timed_training(name, shape, training, data, device, None)
        plain.append(seconds)
        checkpointer.remove()
        checkpointed.append(timed_training(name, shape, training, data, device, checkpointer)[0])
        checkpointer.remove()
        started = time.perf_counter()
        save_tensors(store.tensors_path("run", "mask"), masks)
        save_tensors(store.tensors_path("run", "trained"), network.module.state_dict())
        store.write_record("run", {"run_id": "run", "curves": vars(result.curves), **result.summary()})
        writes.append(time.perf_counter() - started)
    base, with_checkpoints = statistics.median(plain), statistics.median(checkpointed)
    per_save = statistics.median(checkpointer.seconds)
    per_iteration = base / iterations
    return {"baseline_s": base, "checkpointed_s": with_checkpoints, "saves": len(checkpointer.seconds) // repeats,
            "per_save_s": per_save, "checkpoint_overhead": with_checkpoints / base - 1,
            "overhead_at_default": per_save / (CHECKPOINT_EVERY * per_iteration),
            "record_overhead": statistics.median(writes) / base,
            "record_overhead_at_default_length": statistics.median(writes) / (CHECKPOINT_EVERY * per_iteration)}


def main() -> None:
    """Print one line of ratios per network."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    scale = 10 if device.type == "cuda" else 1
    print(f"device {device}, torch threads {torch.get_num_threads()}, default interval {CHECKPOINT_EVERY}")
    with tempfile.TemporaryDirectory() as folder:
        for name, shape, iterations, every in CASES:
            r = measure(name, shape, iterations * scale, every * scale, args.repeats, device, Path(folder))
            print(f"{name}: {iterations * scale} iterations, baseline {r['baseline_s']:.2f} s, "
                  f"with {r['saves']} checkpoints (every {every * scale}) {r['checkpointed_s']:.2f} s: "
                  f"overhead {100 * r['checkpoint_overhead']:+.1f}%; one save {1000 * r['per_save_s']:.1f} ms, "
                  f"{r['per_save_s'] / r['baseline_s'] * iterations * scale:.3f} iterations' time; extrapolated to every {CHECKPOINT_EVERY}: "
                  f"{100 * r['overhead_at_default']:.4f}%; final writes (mask, weights, record) "
                  f"{100 * r['record_overhead']:.3f}% of this run, "
                  f"{100 * r['record_overhead_at_default_length']:.4f}% of a {CHECKPOINT_EVERY}-iteration run")


if __name__ == "__main__":
    main()
