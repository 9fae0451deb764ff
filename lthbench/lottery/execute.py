"""Train one run, or runs that train together, from prepared state to stored tensors and records."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from lthbench.lottery.prepare import PreparedRun, construct, load_data, prepare_run, save_run_tensors
from lthbench.lottery.record import make_record, run_description
from lthbench.lottery.workspace import Workspace
from lthbench.run.plan import RunSpec
from lthbench.store import Record, content_hash
from lthbench.train.checkpoint import Checkpointer, Snapshots, TrainingHooks
from lthbench.train.data import DeviceData
from lthbench.train.loop import train
from lthbench.train.memory import trials_that_fit_device
from lthbench.train.result import TrainResult
from lthbench.train.stack import Stack, can_batch, has_convolution, make_stack

#: ``(run id, iterations done, total iterations, the run's latest training loss or None)``.
ProgressReport = Callable[[str, int, int, float | None], None]


def batch_key(spec: RunSpec, ws: Workspace, convolutions: bool = True) -> str | None:
    """What runs that may train together in one :func:`execute` have in common, or ``None`` for this run.

    Runs batch when they share architecture, data set and training settings
    (their cells, seeds, rounds, masks and initializers may differ). Dense
    runs (they save θ_k mid-training), bf16 training (a stack computes in
    fp32) and networks with BatchNorm or active dropout never batch; with
    ``convolutions`` false, neither do networks holding a convolution.
    """
    key = _training_key(spec)
    if key is None:
        return None
    module = construct(spec, ws)[0].module
    return key if can_batch(module) and (convolutions or not has_convolution(module)) else None


def _training_key(spec: RunSpec) -> str | None:
    """Architecture, data set and training settings of a run that may batch (a pruned fp32 run)."""
    cell = spec.cell
    if spec.round == 0 or cell.training.precision != "fp32":
        return None
    return content_hash({"architecture": cell.architecture.key(), "dataset": cell.dataset.key(),
                         "training": dataclasses.asdict(cell.training)})


def execute(specs: Sequence[RunSpec], ws: Workspace, checkpoint_every: int = 0,
            on_progress: ProgressReport = lambda run_id, done, total, loss: None,
            log: Callable[[str], None] = lambda line: None) -> list[Record]:
    """Prepare, train and finish one run, or runs of one :func:`batch_key` together; their records.

    Runs of one seed share their data. Several runs train as one stack per
    first iteration (rewinding starts later), split further when a GPU's
    memory budget holds fewer models. Each training keeps a checkpoint every
    ``checkpoint_every`` iterations (0: none): a lone run's at
    :meth:`~lthbench.store.Store.checkpoint_path`, a stack's at
    :meth:`~lthbench.store.Store.group_checkpoint_path` of its runs, so that
    the same runs resume from it; the checkpoints stay until the caller has
    stored the records (:meth:`~lthbench.store.Store.remove_checkpoints`). Records come in the order of ``specs``; any
    exception propagates. ``log`` gets lines for every run's log.
    """
    keys = {_training_key(spec) for spec in specs}
    if len(specs) > 1 and (None in keys or len(keys) != 1):
        raise ValueError("runs that train together must be pruned fp32 runs of one architecture, data set and training")
    training = specs[0].cell.training
    datas: dict[int, DeviceData] = {}
    prepared = []
    for spec in specs:
        if spec.seed not in datas:
            datas[spec.seed] = load_data(spec, ws)
        prepared.append(prepare_run(spec, ws, datas[spec.seed]))
    if len(specs) > 1 and not can_batch(prepared[0].network.module):
        raise ValueError(f"architecture {specs[0].cell.architecture.label!r} cannot train batched (BatchNorm)")
    results: dict[str, TrainResult] = {}
    by_start: dict[int, list[PreparedRun]] = {}
    for run in prepared:
        by_start.setdefault(run.start_iteration, []).append(run)
    for start, runs in by_start.items():
        size = trials_that_fit_device(runs[0].network.module, runs[0].data, training) if len(runs) > 1 else 1
        for first in range(0, len(runs), size):
            chunk = runs[first:first + size]
            trained = _train_together(chunk, start, ws, checkpoint_every, on_progress, log)
            results.update((run.spec.run_id, result) for run, result in zip(chunk, trained))
    return [_finish(run, results[run.spec.run_id], ws) for run in prepared]


def _train_together(runs: list[PreparedRun], start: int, ws: Workspace, checkpoint_every: int,
                    on_progress: ProgressReport, log: Callable[[str], None]) -> list[TrainResult]:
    """Train prepared runs of one first iteration as one stack, with its checkpoint; a dense run saves its θ_k."""
    ids = [run.spec.run_id for run in runs]
    path = ws.store.checkpoint_path(ids[0]) if len(ids) == 1 else ws.store.group_checkpoint_path(ids)
    checkpointer = Checkpointer(path, checkpoint_every)

    def report(done: int, total: int, losses: list[float | None]) -> None:
        for run_id, loss in zip(ids, losses):
            on_progress(run_id, done, total, loss)

    def save_rewind_state(k: int, stack: Stack) -> None:
        for index, run in enumerate(runs):
            if k in run.rewind_points:
                save_run_tensors(run.spec, ws, f"rewind_{k}", stack.module_state(index))

    points = frozenset().union(*(run.rewind_points for run in runs))
    training = runs[0].spec.cell.training
    stack = make_stack([r.network.module for r in runs], [r.masks for r in runs], training.precision)
    described = [run_description(run.spec) for run in runs]

    def evaluated(index: int, iteration: int, metrics: dict[str, float]) -> None:
        ws.registry.evaluation(described[index], iteration, metrics)

    hooks = TrainingHooks(checkpointer, report, log, Snapshots(points, save_rewind_state) if points else None,
                          evaluated)
    return train(stack, [r.data for r in runs], training, start=start, hooks=hooks)


def _finish(prepared: PreparedRun, result: TrainResult, ws: Workspace) -> Record:
    """Save the tensors later runs need (mask, trained weights of a mask source) and return the record."""
    spec, module = prepared.spec, prepared.network.module
    save_run_tensors(spec, ws, "mask", prepared.masks)
    if spec.is_mask_source:
        save_run_tensors(spec, ws, "trained", module.state_dict())
    return make_record(prepared, result, ws)
