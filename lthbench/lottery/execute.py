"""One training run of an IMP chain: build, initialise, prune, train, and describe the result."""

from __future__ import annotations

import dataclasses
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import lthbench
from lthbench.train.batched import train_batched, trials_that_fit_device
from lthbench.train.checkpoint import Checkpointer, TrainingHooks
from lthbench.train.data import DeviceData, prepare, seeded_generator
from lthbench.masks import count_remaining, full_masks, weights_remaining
from lthbench.run.plan import RunSpec
from lthbench.protocols import InitContext, Network, PruningContext
from lthbench.registry import Registry
from lthbench.train.stack import can_batch
from lthbench.store import Store, content_hash, load_tensors, save_tensors
from lthbench.train.loop import TrainResult, total_iterations, train


@dataclass
class Workspace:
    """Where runs read data and write results, and on which device they train."""

    registry: Registry
    store: Store
    data_root: Path
    download: bool
    device: torch.device


def resolve_device(name: str) -> torch.device:
    """``auto`` is the first GPU when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def device_label(device: torch.device) -> str:
    """The device in words, e.g. ``cuda:0 (NVIDIA H100 80GB HBM3)`` or ``cpu``."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()})"


def library_versions() -> dict[str, str]:
    """Versions that can change a result."""
    import torchvision

    return {"lthbench": lthbench.__version__, "torch": torch.__version__,
            "torchvision": torchvision.__version__, "python": platform.python_version()}


def _construct(spec: RunSpec, ws: Workspace) -> tuple[Network, Any]:
    arch = ws.registry.architecture(spec.cell.architecture.name)
    dataset = ws.registry.dataset(spec.cell.dataset.name)
    return arch.build(dataset.input_shape, dataset.num_classes, spec.cell.architecture.params), arch


def _build(spec: RunSpec, ws: Workspace) -> tuple[Network, Any]:
    network, arch = _construct(spec, ws)
    network.module.to(ws.device)
    return network, arch


def _check_masks(new: dict[str, torch.Tensor], old: dict[str, torch.Tensor], network: Network, pruner: str) -> None:
    params = dict(network.module.named_parameters())
    for name in network.prunable:
        if name not in new:
            raise ValueError(f"pruner {pruner!r} returned no mask for prunable weight {name!r}")
    for name, mask in new.items():
        if name not in params or mask.shape != params[name].shape or mask.dtype != torch.bool:
            raise ValueError(f"pruner {pruner!r} returned a mask for {name!r} that is not a bool tensor of its shape")
        if name in old and bool((mask & ~old[name].to(mask.device)).any()):
            raise ValueError(f"pruner {pruner!r} revived weights of {name!r} that an earlier round pruned")


def next_masks(spec: RunSpec, network: Network, ws: Workspace) -> dict[str, torch.Tensor]:
    """This round's masks, pruned from the mask parent's trained weights."""
    schedule, parent = spec.cell.schedule, spec.mask_parent
    trained = load_tensors(ws.store.tensors_path(parent, "trained"))
    network.module.load_state_dict(trained)
    old = load_tensors(ws.store.tensors_path(parent, "mask"))
    output_rate = schedule.output_rate if schedule.output_rate is not None else schedule.rate / 2
    weights = {name: p.detach() for name, p in network.module.named_parameters()}
    old = {name: mask.to(ws.device) for name, mask in old.items()}

    def context() -> PruningContext:
        level = PruningContext(network, weights, dict(old), 0.0, None, seeded_generator("prune", spec.seed, spec.round),
                               delegate, spec.round, schedule.mode == "one_shot")
        level.rate, level.output_rate = level.level_rate(schedule.rate), level.level_rate(output_rate)
        return level

    def delegate(name: str) -> dict[str, torch.Tensor]:
        return ws.registry.pruner(name).prune(context(), ws.registry.pruner(name).Params())

    pruner = ws.registry.pruner(spec.cell.pruner.name)
    masks = pruner.prune(context(), spec.cell.pruner.params)
    _check_masks(masks, old, network, pruner.name)
    return {**old, **masks}


def _initial_state(spec: RunSpec, network: Network, arch: Any, data: DeviceData, ws: Workspace) -> Any:
    initializer = ws.registry.initializer(spec.initializer.name)
    initial_state = load_tensors(ws.store.tensors_path(spec.dense_id, "init"))
    context = InitContext(
        network=network, architecture=arch,
        initial_state=initial_state,
        rewind_state=lambda k: _rewind_state(spec, k, data, ws, initial_state),
        iterations_per_epoch=data.iterations_per_epoch(spec.cell.training.batch_size),
        generator=seeded_generator("reinit", spec.seed, spec.round, spec.initializer.label),
        seed=spec.seed, round=spec.round,
    )
    return initializer.initialize(context, spec.initializer.params)


def _rewind_state(spec: RunSpec, k: int, data: DeviceData, ws: Workspace,
                  initial_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """θ_k of the chain's dense run: saved while it trained, else recomputed and saved now.

    A rewinding point added to a cell after its dense run finished is
    recomputed by training θ₀ for ``k`` iterations with the dense run's
    settings, data order and learning rates: on a CPU that is bit for bit
    the state the dense run passed through (on a GPU, to rounding).
    """
    path = ws.store.tensors_path(spec.dense_id, f"rewind_{k}")
    if path.exists():
        return load_tensors(path)
    network, _ = _build(spec, ws)
    network.module.load_state_dict(initial_state)
    state: dict[str, torch.Tensor] = {}
    train(network.module, full_masks(network), data, spec.cell.training, save_at=lambda i: i == k, stop_at=k,
          on_save=lambda i, module: state.update({n: t.detach().clone() for n, t in module.state_dict().items()}))
    save_tensors(path, state)
    return {name: tensor.cpu() for name, tensor in state.items()}


def _rewind_points(spec: RunSpec, data: DeviceData, ws: Workspace) -> set[int]:
    per_epoch = data.iterations_per_epoch(spec.cell.training.batch_size)
    total = total_iterations(spec.cell.training, per_epoch)
    points = set()
    for ref in spec.cell.initializers:
        k = ws.registry.initializer(ref.name).rewind_iteration(ref.params, per_epoch)
        if k is not None and not 0 <= k <= total:
            raise ValueError(f"initializer {ref.label} rewinds to iteration {k}, but the dense run trains for "
                             f"{total} iterations ({per_epoch} per epoch)")
        if k is not None:
            points.add(k)
    return points


@dataclass
class PreparedRun:
    """A run ready to train: its network holding the initial weights, its masks, data and first iteration."""

    spec: RunSpec
    network: Network
    masks: dict[str, torch.Tensor]
    data: DeviceData
    start_iteration: int
    #: Iterations before which a dense run saves θ_k for rewinding (none in later rounds).
    rewind_points: frozenset[int]


def load_data(spec: RunSpec, ws: Workspace) -> DeviceData:
    """The run's data on the workspace's device, split and ordered by its seed."""
    cell = spec.cell
    return prepare(ws.registry.dataset(cell.dataset.name), ws.data_root, ws.download, cell.training, spec.seed,
                   ws.device)


def _save(spec: RunSpec, ws: Workspace, name: str, tensors: dict[str, torch.Tensor]) -> None:
    save_tensors(ws.store.tensors_path(spec.run_id, name), tensors)


def prepare_run(spec: RunSpec, ws: Workspace, data: DeviceData | None = None) -> PreparedRun:
    """Build, initialise and prune the run's network, up to the point where training starts.

    A dense run draws θ₀ and saves it; a later round prunes its mask from the
    mask parent and resets the survivors with its initializer (a rewinding
    run whose θ_k the dense run did not save, because the rewinding point was
    added later, recomputes it from θ₀ first). ``data``
    (default: loaded here) lets runs of one seed share one copy.
    """
    data = data if data is not None else load_data(spec, ws)
    network, arch = _build(spec, ws)
    if spec.round == 0:
        arch.initialize(network.module, seeded_generator("init", spec.seed))
        _save(spec, ws, "init", network.module.state_dict())
        return PreparedRun(spec, network, full_masks(network), data, 0, frozenset(_rewind_points(spec, data, ws)))
    masks = next_masks(spec, network, ws)
    network, arch = _build(spec, ws)  # a fresh module: nothing of the parent's training carries over
    state = _initial_state(spec, network, arch, data, ws)
    network.module.load_state_dict(state.state)
    return PreparedRun(spec, network, masks, data, state.start_iteration, frozenset())


def finish_run(prepared: PreparedRun, result: TrainResult, ws: Workspace) -> dict[str, Any]:
    """Save the tensors later runs need (mask, trained weights of a mask source) and return the record."""
    spec, module = prepared.spec, prepared.network.module
    _save(spec, ws, "mask", prepared.masks)
    if spec.is_mask_source:
        _save(spec, ws, "trained", module.state_dict())
    return make_record(spec, prepared.network, prepared.masks, result, prepared.start_iteration, ws)


def execute(spec: RunSpec, ws: Workspace, hooks: TrainingHooks | None = None) -> dict[str, Any]:
    """Run one training run, save the tensors later runs need, and return its record.

    ``hooks`` (checkpoints, progress, log lines) are handed to the trainer.
    """
    prepared = prepare_run(spec, ws)
    result = train(prepared.network.module, prepared.masks, prepared.data, spec.cell.training,
                   start_iteration=prepared.start_iteration, save_at=prepared.rewind_points.__contains__,
                   on_save=lambda k, module: _save(spec, ws, f"rewind_{k}", module.state_dict()), hooks=hooks)
    return finish_run(prepared, result, ws)


def _training_key(spec: RunSpec) -> str | None:
    """Architecture, data set and training settings of a run that may batch (a pruned fp32 run)."""
    cell = spec.cell
    if spec.round == 0 or cell.training.precision != "fp32":
        return None
    return content_hash({"architecture": cell.architecture.key(), "dataset": cell.dataset.key(),
                         "training": dataclasses.asdict(cell.training)})


def batch_key(spec: RunSpec, ws: Workspace) -> str | None:
    """What runs that may train together in :func:`execute_group` have in common, or ``None`` for this run.

    Runs batch when they share architecture, data set and training settings
    (their cells, seeds, rounds, masks and initializers may differ). Dense
    runs (they save θ_k mid-training), bf16 training (the batched trainer
    computes in fp32) and networks with BatchNorm never batch.
    """
    key = _training_key(spec)
    return key if key is not None and can_batch(_construct(spec, ws)[0].module) else None


def execute_group(specs: Sequence[RunSpec], ws: Workspace,
                  on_progress: Callable[[int, int], None] = lambda done, total: None,
                  checkpoint_every: int = 0, log: Callable[[str], None] = lambda line: None) -> list[dict[str, Any]]:
    """Train runs of one :func:`batch_key` together and return their records, in the order of ``specs``.

    Each run is prepared as :func:`execute` prepares it (runs of one seed
    share their data), then the runs train stacked with
    :func:`lthbench.train.batched.train_batched`: one call per first iteration
    (rewinding starts later), split further when a GPU's memory budget holds
    fewer models. Each call keeps one checkpoint for its stack every
    ``checkpoint_every`` iterations (0: none), named by its runs, so the same
    runs stacked again resume from it. Any exception propagates; the caller
    decides what becomes of the group's runs. ``on_progress(done, total)``
    reports the iterations of the training call under way; ``log`` gets lines
    for every run's log.
    """
    keys = {_training_key(spec) for spec in specs}
    if None in keys or len(keys) != 1:
        raise ValueError("execute_group needs pruned fp32 runs of one architecture, data set and training")
    training = specs[0].cell.training
    datas: dict[int, DeviceData] = {}
    prepared = []
    for spec in specs:
        if spec.seed not in datas:
            datas[spec.seed] = load_data(spec, ws)
        prepared.append(prepare_run(spec, ws, datas[spec.seed]))
    if not can_batch(prepared[0].network.module):
        raise ValueError(f"architecture {specs[0].cell.architecture.label!r} cannot train batched (BatchNorm)")
    results: dict[str, TrainResult] = {}
    by_start: dict[int, list[PreparedRun]] = {}
    for run in prepared:
        by_start.setdefault(run.start_iteration, []).append(run)
    for start, runs in by_start.items():
        size = trials_that_fit_device(runs[0].network.module, runs[0].data, training)
        for first in range(0, len(runs), size):
            chunk = runs[first:first + size]
            path = ws.store.group_checkpoint_path([r.spec.run_id for r in chunk])
            checkpointer = Checkpointer(path, checkpoint_every)
            trained = train_batched([r.network.module for r in chunk], [r.masks for r in chunk],
                                    [r.data for r in chunk], training, start, on_progress, checkpointer, log)
            checkpointer.remove()
            results.update((r.spec.run_id, result) for r, result in zip(chunk, trained))
    return [finish_run(run, results[run.spec.run_id], ws) for run in prepared]


def make_record(spec: RunSpec, network: Network, masks: dict[str, torch.Tensor], result: TrainResult,
                start: int, ws: Workspace) -> dict[str, Any]:
    """The JSON record of a finished run."""
    counts = count_remaining(masks, network.prunable)
    return {
        **run_description(spec),
        "status": "diverged" if result.diverged else "done",
        "weights_remaining": weights_remaining(masks, network.prunable),
        "layers": {name: {"remaining": r, "total": t} for name, (r, t) in counts.items()},
        "curves": vars(result.curves),
        **result.summary(),
        "start_iteration": start,
        "iterations": result.iterations,
        "wall_time": result.wall_time,
        "device": device_label(ws.device),
        "versions": library_versions(),
        "error": "loss became non-finite" if result.diverged else None,
        "traceback": None,
    }


def run_description(spec: RunSpec) -> dict[str, Any]:
    """The identifying fields shared by a run's record and its lifecycle-hook payload."""
    cell = spec.cell
    return {
        "schema": 1,
        "run_id": spec.run_id,
        "cell_id": spec.cell_id,
        "experiment": cell.experiment,
        "architecture": cell.architecture.label,
        "dataset": cell.dataset.label,
        "pruner": cell.pruner.label,
        "initializer": spec.initializer_label,
        "seed": spec.seed,
        "round": spec.round,
        "mode": cell.schedule.mode,
        "depends_on": list(spec.depends_on),
        "training": {k: v for k, v in vars(cell.training).items()},
    }
