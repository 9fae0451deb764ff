"""How long a matrix will take: from the runs it finished, or from a short measured probe of its first cell.

Both give seconds per training iteration of one run; the estimate divides
the iterations left by the parallel CPU jobs (:func:`default_jobs`) or GPUs.
Evaluation is inside the finished runs' times but not inside a probe, and
neither counts what stacking runs (``--batch-trials``) saves, so an estimate
from a probe is on the long side for small networks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path

import torch

from lthbench.config.devices import resolve_device
from lthbench.config.settings import Benchmark
from lthbench.registry import Registry
from lthbench.run.progress import duration
from lthbench.run.threads import apply_threads, default_jobs, default_threads
from lthbench.store import Record

#: Iterations a probe times after its warm-up iterations.
PROBE_STEPS, PROBE_WARMUP = 20, 3


def from_records(records: Iterable[Record]) -> tuple[float, int] | None:
    """Seconds per iteration of the finished runs and their number; ``None`` when none has a time."""
    timed = [r for r in records if r.get("wall_time") and r.get("iterations") is not None
             and r.get("start_iteration") is not None]
    trained = sum((r.get("stopped_at") or r["iterations"]) - r["start_iteration"] for r in timed)
    if not timed or trained <= 0:
        return None
    return sum(r["wall_time"] for r in timed) / trained, len(timed)


def probe(benchmark: Benchmark, registry: Registry, root: Path, download: bool) -> float:
    """Seconds per training iteration of the first cell's network, measured on the benchmark's device."""
    from lthbench.cli.bench import Clock
    from lthbench.masks import full_masks
    from lthbench.train.data import SeedTag, prepare, seeded_generator
    from lthbench.train.loop import train
    from lthbench.train.stack import make_stack

    cell = benchmark.cells[0]
    device = resolve_device(benchmark.device)
    if device.type == "cpu":
        apply_threads(benchmark.threads or default_threads(default_jobs()))
    dataset = registry.dataset(cell.dataset.name)
    arch = registry.architecture(cell.architecture.name)
    network = arch.build(dataset.input_shape, dataset.num_classes, cell.architecture.params)
    arch.initialize(network.module, seeded_generator(SeedTag.INIT, 0))
    network.module.to(device)
    training = dataclasses.replace(cell.training, patience=0)
    data = prepare(dataset, root, download, training, 0, device)
    clock = Clock(device, PROBE_WARMUP, PROBE_STEPS)
    train(make_stack([network.module], [full_masks(network)], training.precision), [data],
          clock.training(training), hooks=clock.hooks())
    return 1 / clock.measurement(training.batch_size, 1).steps_per_second


def parallel_jobs(benchmark: Benchmark) -> int:
    """Runs that train at once by default: one per CPU job, or one per visible GPU."""
    device = resolve_device(benchmark.device)
    return default_jobs() if device.type == "cpu" else max(1, torch.cuda.device_count())


def estimate_line(iterations: int, seconds_per_iteration: float, jobs: int, source: str) -> str:
    """``estimated time: about 12 min (...)`` for ``iterations`` left."""
    return (f"estimated time: about {duration(iterations * seconds_per_iteration / jobs)} for {iterations:,} "
            f"iterations with {jobs} parallel jobs, at {1 / seconds_per_iteration:.0f} iterations/s per run "
            f"({source})")
