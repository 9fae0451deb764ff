"""Expand a benchmark's cells into training runs, each with a content-hashed id and its dependencies.

A chain is one cell and one seed: the dense run (round 0), then for every
round one run per initializer. Every round's mask is pruned from the trained
weights of the mask source: in iterative mode the previous round's run of the
mask-source initializer (the dense run for round 1), in one-shot mode always
the dense run. A run's id hashes everything that determines its result, and
the id of the run its mask comes from, so the whole lineage is in the id.
Display names (the experiment's name), the number of rounds and the other
initializers of the cell are not part of it: adding rounds, seeds, a control
or a rewinding point reuses the finished runs (θ_k of a rewinding point added
later is recomputed from θ₀ by :func:`lthbench.lottery.prepare.prepare_run`).

The iteration arithmetic of a run outside training lives here too: how long
it trains (:func:`training_length`) and where it starts (:func:`start_iteration`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from lthbench.config.settings import Benchmark, Cell, PluginRef, Training, training_key
from lthbench.registry import Registry
from lthbench.store import content_hash
from lthbench.train.optim import total_iterations

#: Version of the layout of ``matrix.json`` and of run records; a reader refuses any other.
SCHEMA = 1
#: The initializer label of a chain's dense run (round 0).
DENSE = "dense"
#: The fields that describe a cell in ``matrix.json``, in records and in report rows.
CELL_FIELDS = ("experiment", "architecture", "dataset", "pruner", "mode")


@dataclass(frozen=True)
class RunSpec:
    """One training run of the matrix."""

    run_id: str
    cell: Cell
    cell_id: str
    seed: int
    round: int
    #: ``None`` for the dense run.
    initializer: PluginRef | None
    dense_id: str
    #: The run whose trained weights (and mask) this round's mask is pruned from.
    mask_parent: str | None
    #: Whether later rounds prune from this run's trained weights.
    is_mask_source: bool

    @property
    def depends_on(self) -> tuple[str, ...]:
        """Runs that must be finished first."""
        return tuple(dict.fromkeys(r for r in (self.dense_id, self.mask_parent) if r and r != self.run_id))

    @property
    def initializer_label(self) -> str:
        """:data:`DENSE` for round 0, else the initializer's label."""
        return self.initializer.label if self.initializer else DENSE


def cell_fields(cell: Cell) -> dict[str, Any]:
    """A cell in words (:data:`CELL_FIELDS`): its experiment, the labels of its plugins and its pruning mode."""
    return dict(zip(CELL_FIELDS, (cell.experiment, cell.architecture.label, cell.dataset.label, cell.pruner.label,
                                  cell.schedule.mode)))


def cell_key(cell: Cell) -> dict:
    """What determines a cell's results (its name excluded)."""
    return {
        "architecture": cell.architecture.key(),
        "dataset": cell.dataset.key(),
        "pruner": cell.pruner.key(),
        "initializers": [ref.key() for ref in cell.initializers],
        "schedule": {k: v for k, v in dataclasses.asdict(cell.schedule).items() if k != "rounds"},
        "mask_source": cell.mask_source,
        "training": training_key(cell.training),
    }


def _run_settings(cell: Cell) -> dict:
    """The settings of a cell that go into the key of each of its pruned runs: all but its initializers."""
    settings = {k: v for k, v in cell_key(cell).items() if k not in ("initializers", "mask_source")}
    settings["schedule"] = {k: v for k, v in settings["schedule"].items() if k != "mask_source"}
    return settings


def _run_key(settings: dict, seed: int, round_: int, ref: PluginRef, parent: str, dense_id: str,
             is_source: bool) -> dict:
    """What determines a pruned run's result: its cell's :func:`_run_settings`, seed, round, initializer and
    mask lineage.

    Whether it is its chain's mask source is in the key as well (a mask
    source also saves its trained weights for the next round).
    """
    return {"settings": settings, "seed": seed, "round": round_, "initializer": ref.key(),
            "mask_parent": parent, "dense": dense_id, "mask_source": is_source}


def _dense_key(cell: Cell, seed: int) -> dict:
    """What determines a dense run's result: the network, the data and the training, with the seed.

    Pruner, schedule and initializers are left out, as a dense run trains
    before any pruning: cells that differ only in those share their dense
    runs (and every cell of the same network and training reuses them).
    """
    return {
        "round": 0,
        "seed": seed,
        "architecture": cell.architecture.key(),
        "dataset": cell.dataset.key(),
        "training": training_key(cell.training),
    }


def chain_runs(cell: Cell, seed: int) -> list[RunSpec]:
    """The runs of one chain, dense first, then round by round."""
    cell_id = content_hash(cell_key(cell))
    dense_id = content_hash(_dense_key(cell, seed))
    runs = [RunSpec(dense_id, cell, cell_id, seed, 0, None, dense_id, None, True)]
    settings = _run_settings(cell)
    parent = dense_id
    for round_ in range(1, cell.schedule.rounds + 1):
        next_parent = parent
        for ref in cell.initializers:
            is_source = ref.name == cell.mask_source and cell.schedule.mode == "iterative"
            run_id = content_hash(_run_key(settings, seed, round_, ref, parent, dense_id, is_source))
            spec = RunSpec(run_id, cell, cell_id, seed, round_, ref, dense_id, parent, is_source)
            runs.append(spec)
            if is_source:
                next_parent = spec.run_id
        if cell.schedule.mode == "iterative":
            parent = next_parent
    return runs


def cell_runs(benchmark: Benchmark) -> list[RunSpec]:
    """The runs of every cell, chain by chain (cells in file order, then seeds); a shared dense run once per cell."""
    return [run for cell in benchmark.cells for seed in benchmark.seeds for run in chain_runs(cell, seed)]


def plan_runs(benchmark: Benchmark) -> list[RunSpec]:
    """Every run of the matrix once, where it first appears in :func:`cell_runs` (dependencies first)."""
    unique: dict[str, RunSpec] = {}
    for run in cell_runs(benchmark):
        unique.setdefault(run.run_id, run)
    return list(unique.values())


def runs_to_train(benchmark: Benchmark) -> list[RunSpec]:
    """The runs of :func:`plan_runs`, a dense run shared by cells taken as the last of those cells' run.

    That cell's initializers choose the θ_k its dense run saves (the other
    cells' are recomputed when needed), and its record names that cell.
    """
    last = {run.run_id: run for run in cell_runs(benchmark)}
    return [last[run.run_id] for run in plan_runs(benchmark)]


def iterations_per_epoch(training: Training, train_size: int | None = None) -> int | None:
    """Full batches per pass over ``train_size`` training images (validation held out); ``None`` where unknown.

    Without ``train_size``, ``train_subset`` less the validation images
    gives it; a run over a whole data set needs the data set loaded.
    """
    if train_size is None:
        if not training.train_subset:
            return None
        train_size = training.train_subset - training.validation_size
    return max(1, train_size // training.batch_size)


def training_length(training: Training, train_size: int | None = None) -> int | None:
    """Training iterations of a run from its start; ``None`` for epochs over a data set of unknown size."""
    per_epoch = iterations_per_epoch(training, train_size)
    if training.epochs and per_epoch is None:
        return None
    return total_iterations(training, per_epoch or 0)


def rewind_iteration(ref: PluginRef, registry: Registry, per_epoch: int | None = None) -> int:
    """The dense-run iteration the initializer ``ref`` rewinds to, as its plugin states it; 0 when it does not.

    Without ``per_epoch`` (the data set's size unknown) the initializer is
    asked with 0 iterations per epoch, so a point given in epochs counts 0.
    """
    return registry.initializer(ref.name).rewind_iteration(ref.params, per_epoch or 0) or 0


def start_iteration(run: RunSpec, registry: Registry, per_epoch: int | None = None) -> int:
    """The iteration a run starts training at: its initializer's rewind point (0 for the dense run)."""
    return rewind_iteration(run.initializer, registry, per_epoch) if run.initializer else 0
