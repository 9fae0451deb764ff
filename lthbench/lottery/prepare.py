"""A run up to its first training step: build its network, draw θ₀ or prune the parent's mask, reset the weights."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from lthbench.lottery.workspace import Workspace
from lthbench.masks import full_masks
from lthbench.protocols import InitContext, Network, PruningContext, level_rate
from lthbench.run.plan import RunSpec
from lthbench.store import load_tensors, save_tensors
from lthbench.train.checkpoint import Snapshots, TrainingHooks
from lthbench.train.data import DeviceData, SeedTag, prepare, seeded_generator
from lthbench.train.loop import train
from lthbench.train.optim import total_iterations
from lthbench.train.stack import Stack, make_stack


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


def construct(spec: RunSpec, ws: Workspace) -> tuple[Network, Any]:
    """The run's network, freshly built on the CPU, and its architecture plugin."""
    arch = ws.registry.architecture(spec.cell.architecture.name)
    dataset = ws.registry.dataset(spec.cell.dataset.name)
    return arch.build(dataset.input_shape, dataset.num_classes, spec.cell.architecture.params), arch


def _build(spec: RunSpec, ws: Workspace) -> tuple[Network, Any]:
    network, arch = construct(spec, ws)
    network.module.to(ws.device)
    return network, arch


def save_run_tensors(spec: RunSpec, ws: Workspace, name: str, tensors: dict[str, torch.Tensor]) -> None:
    """Save one of the run's tensor files (``init``, ``rewind_<k>``, ``mask``, ``trained``)."""
    save_tensors(ws.store.tensors_path(spec.run_id, name), tensors)


def load_data(spec: RunSpec, ws: Workspace) -> DeviceData:
    """The run's data on the workspace's device, split and ordered by its seed."""
    cell = spec.cell
    return prepare(ws.registry.dataset(cell.dataset.name), ws.data_root, ws.download, cell.training, spec.seed,
                   ws.device)


def inputs(spec: RunSpec) -> list[tuple[str, str]]:
    """The tensor files of other runs that :func:`prepare_run` reads for ``spec``, as ``(run id, name)``.

    A pruned run reads its mask parent's trained weights and mask, and its
    dense run's θ₀; a dense run reads nothing. θ_k is not among them: a
    missing one is recomputed.
    """
    if spec.round == 0:
        return []
    return [(spec.mask_parent, "trained"), (spec.mask_parent, "mask"), (spec.dense_id, "init")]


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
        arch.initialize(network.module, seeded_generator(SeedTag.INIT, spec.seed))
        save_run_tensors(spec, ws, "init", network.module.state_dict())
        return PreparedRun(spec, network, full_masks(network), data, 0, frozenset(_rewind_points(spec, data, ws)))
    masks = next_masks(spec, network, ws)
    # The pruner saw (and may have changed) the parent's trained weights and buffers, BatchNorm statistics
    # among them: the initializer starts from a network built afresh, which holds nothing of them.
    network, arch = _build(spec, ws)
    state = _initial_state(spec, network, arch, data, ws)
    network.module.load_state_dict(state.state)
    return PreparedRun(spec, network, masks, data, state.start_iteration, frozenset())


def next_masks(spec: RunSpec, network: Network, ws: Workspace) -> dict[str, torch.Tensor]:
    """This round's masks, pruned from the mask parent's trained weights (loaded into ``network``).

    The pruner gets copies of the parent's masks: whatever it does to them,
    its result is checked against the masks as stored, so it cannot revive
    a weight that an earlier round pruned.
    """
    schedule, parent = spec.cell.schedule, spec.mask_parent
    network.module.load_state_dict(load_tensors(ws.store.tensors_path(parent, "trained")))
    old = {name: mask.to(ws.device) for name, mask in load_tensors(ws.store.tensors_path(parent, "mask")).items()}
    weights = {name: p.detach() for name, p in network.module.named_parameters()}
    one_shot = schedule.mode == "one_shot"

    def context() -> PruningContext:  # masks are copies: the checks below compare with the engine's own
        return PruningContext(
            network=network, weights=weights, masks={name: mask.clone() for name, mask in old.items()},
            rate=level_rate(schedule.rate, spec.round, one_shot),
            output_rate=level_rate(schedule.output_layer_rate, spec.round, one_shot),
            generator=seeded_generator(SeedTag.PRUNE, spec.seed, spec.round),
            delegate=delegate, level=spec.round, one_shot=one_shot,
        )

    def delegate(name: str) -> dict[str, torch.Tensor]:
        return ws.registry.pruner(name).prune(context(), ws.registry.pruner(name).Params())

    pruner = ws.registry.pruner(spec.cell.pruner.name)
    masks = pruner.prune(context(), spec.cell.pruner.params)
    _check_masks(masks, old, network, pruner.name)
    return {**old, **masks}


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


def _initial_state(spec: RunSpec, network: Network, arch: Any, data: DeviceData, ws: Workspace) -> Any:
    initializer = ws.registry.initializer(spec.initializer.name)
    initial_state = load_tensors(ws.store.tensors_path(spec.dense_id, "init"))
    context = InitContext(
        network=network, architecture=arch,
        initial_state=initial_state,
        rewind_state=lambda k: _rewind_state(spec, k, data, ws, initial_state),
        iterations_per_epoch=data.iterations_per_epoch(spec.cell.training.batch_size),
        generator=seeded_generator(SeedTag.REINIT, spec.seed, spec.round, spec.initializer.label),
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

    def keep(iteration: int, stack: Stack) -> None:
        state.update(stack.module_state(0))

    stack = make_stack([network.module], [full_masks(network)], spec.cell.training.precision)
    train(stack, [data], spec.cell.training, hooks=TrainingHooks(snapshots=Snapshots(frozenset({k}), keep, stop=True)))
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
