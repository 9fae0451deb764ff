"""The resolved settings of one matrix cell, as frozen dataclasses (open_lth's hparams style)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

OPTIMIZERS = ("sgd", "adam")
LR_SCHEDULES = ("step", "cosine")
MODES = ("iterative", "one_shot")
PRECISIONS = ("fp32", "bf16")
#: The initializer that resets survivors to θ₀ (the winning ticket): a cell's default mask source.
TICKET = "original"


def _check(settings: object, checks: list[tuple[bool, str, str]]) -> None:
    """Raise ``ValueError`` naming the first key whose check fails and what it must be."""
    for ok, key, allowed in checks:
        if not ok:
            raise ValueError(f"{key} = {getattr(settings, key)!r} is not allowed; it must be {allowed}")


@dataclass(frozen=True)
class Training:
    """How every network of a cell trains."""

    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    batch_size: int = 128
    #: Training length in iterations; ``epochs`` overrides it when set.
    iterations: int = 1000
    epochs: float = 0.0
    warmup_iterations: int = 0
    lr_schedule: str = "step"
    lr_milestones: tuple[int, ...] = ()
    lr_gamma: float = 0.1
    eval_every: int = 100
    validation_size: int = 5000
    #: Random crop (pad 4) and horizontal flip; ``None`` means the data set's default.
    augment: bool | None = None
    #: Use only this many training / test images (seeded choice); 0 means all.
    train_subset: int = 0
    test_subset: int = 0
    precision: str = "fp32"
    #: Stop a run after this many evaluations without a new minimum validation loss; 0 = off (full budget).
    patience: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.optimizer in OPTIMIZERS, "optimizer", f"one of {', '.join(OPTIMIZERS)}"),
            (math.isfinite(self.lr) and self.lr > 0, "lr", "a positive number"),
            (0 <= self.momentum < 1, "momentum", "in [0, 1)"),
            (math.isfinite(self.weight_decay) and self.weight_decay >= 0, "weight_decay", "non-negative"),
            (all(0 <= b < 1 for b in self.betas) and len(self.betas) == 2, "betas", "two numbers in [0, 1)"),
            (self.batch_size >= 1, "batch_size", "a positive integer"),
            (self.iterations >= 1, "iterations", "a positive integer"),
            (self.epochs >= 0, "epochs", "non-negative"),
            (self.warmup_iterations >= 0, "warmup_iterations", "non-negative"),
            (self.lr_schedule in LR_SCHEDULES, "lr_schedule", f"one of {', '.join(LR_SCHEDULES)}"),
            (all(m > 0 for m in self.lr_milestones), "lr_milestones", "positive iterations"),
            (0 < self.lr_gamma <= 1, "lr_gamma", "in (0, 1]"),
            (self.eval_every >= 1, "eval_every", "a positive integer"),
            (self.validation_size >= 1, "validation_size", "a positive integer"),
            (self.train_subset >= 0, "train_subset", "non-negative (0 = all)"),
            (not self.train_subset or self.validation_size < self.train_subset, "validation_size",
             "smaller than train_subset (the validation images are held out of it)"),
            (self.test_subset >= 0, "test_subset", "non-negative (0 = all)"),
            (self.precision in PRECISIONS, "precision", f"one of {', '.join(PRECISIONS)}"),
            (self.patience >= 0, "patience", "0 (off) or a positive number of evaluations"),
        ]
        _check(self, checks)
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise ValueError("nesterov = true needs optimizer = 'sgd' and a momentum above 0")


#: Training keys added after run ids were first published, with the value that leaves a run unchanged:
#: left out of ids and records at that value, so that adding them kept every stored result.
_LATER_KEYS = {"patience": 0}


def training_key(training: Training) -> dict[str, Any]:
    """The training settings as a dict for run ids and records (:data:`_LATER_KEYS` at their default left out)."""
    return {k: v for k, v in dataclasses.asdict(training).items() if _LATER_KEYS.get(k, object()) != v}


@dataclass(frozen=True)
class Schedule:
    """How a cell prunes: iterative rounds or one-shot levels."""

    mode: str = "iterative"
    #: Number of pruning rounds (iterative) or sparsity levels (one-shot) after the dense run.
    rounds: int = 5
    #: Fraction of the remaining weights pruned per round; one-shot level r keeps (1-rate)^r.
    rate: float = 0.2
    #: Output-layer rate for layerwise pruners; unset means half of ``rate``.
    output_rate: float | None = None
    #: Initializer whose trained weights the next round's mask is computed from.
    mask_source: str = ""

    def __post_init__(self) -> None:
        _check(self, [
            (self.mode in MODES, "mode", f"one of {', '.join(MODES)}"),
            (self.rounds >= 1, "rounds", "at least 1"),
            (0 < self.rate < 1, "rate", "in (0, 1)"),
            (self.output_rate is None or 0 <= self.output_rate < 1, "output_rate", "in [0, 1)"),
        ])

    @property
    def output_layer_rate(self) -> float:
        """The output layer's per-round rate: ``output_rate``, else half of ``rate`` (the paper's choice)."""
        return self.rate / 2 if self.output_rate is None else self.output_rate


@dataclass(frozen=True)
class PluginRef:
    """A plugin chosen by name, with its validated parameters."""

    name: str
    params: Any = None

    def key(self) -> dict[str, Any]:
        """A JSON-ready description used in content hashes and records."""
        params = dataclasses.asdict(self.params) if dataclasses.is_dataclass(self.params) else {}
        return {"name": self.name, "params": params}

    @property
    def label(self) -> str:
        """A short human label: the name plus any non-default parameters."""
        if not dataclasses.is_dataclass(self.params):
            return self.name
        changed = [
            f"{f.name}={getattr(self.params, f.name)}"
            for f in dataclasses.fields(self.params)
            if getattr(self.params, f.name) != f.default
        ]
        return f"{self.name}({', '.join(changed)})" if changed else self.name


@dataclass(frozen=True)
class Cell:
    """One cell of the matrix: everything but the seed and the initializer."""

    experiment: str
    architecture: PluginRef
    dataset: PluginRef
    pruner: PluginRef
    initializers: tuple[PluginRef, ...]
    schedule: Schedule
    training: Training
    #: The training keys this cell's experiment sets, with this cell's values (``matrix.json`` keeps them).
    overrides: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    #: Those of :attr:`overrides` whose values vary among the experiment's cells (a list in the file), for display.
    varying: tuple[str, ...] = field(default=(), compare=False, hash=False)

    @property
    def mask_source(self) -> str:
        """The initializer lineage that the next round's mask is pruned from."""
        names = [ref.name for ref in self.initializers]
        if self.schedule.mask_source:
            return self.schedule.mask_source
        return TICKET if TICKET in names else names[0]

    @property
    def label(self) -> str:
        """The training keys that vary among its experiment's cells, as ``key=value, ...`` (empty when none)."""
        return ", ".join(f"{k}={v}" for k, v in self.overrides.items() if k in self.varying)


@dataclass(frozen=True)
class Report:
    """How ``lthbench report`` judges the comparisons: the ``[report]`` table of a benchmark file."""

    #: Equivalence and non-inferiority margin of the early-stop test accuracy, as a fraction (0.005 = 0.5 points).
    accuracy_margin: float = 0.005
    #: Margin of the early-stop iteration in iterations; unset means a tenth of the cell's training length.
    iteration_margin: int | None = None
    #: Lowest and highest fraction of weights remaining of the levels that the overall comparison pools.
    overall_weights_remaining: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        low, high = self.overall_weights_remaining
        _check(self, [
            (0 < self.accuracy_margin < 1, "accuracy_margin", "a fraction in (0, 1), e.g. 0.005 for 0.5 points"),
            (self.iteration_margin is None or self.iteration_margin >= 1, "iteration_margin",
             "a positive number of iterations"),
            (0 <= low <= high <= 1, "overall_weights_remaining", "[low, high] with 0 <= low <= high <= 1"),
        ])


@dataclass(frozen=True)
class Benchmark:
    """A whole validated benchmark file: global settings and the expanded cells."""

    name: str
    seeds: tuple[int, ...]
    output: str
    device: str
    cells: tuple[Cell, ...]
    source: str = ""
    download: bool | None = None  # unset: see lthbench.data_root.resolve_download
    data_root: str = ""
    #: torch CPU threads per worker process; 0 = the default rule (:func:`lthbench.run.threads.default_threads`).
    threads: int = 0
    #: Where runs execute (``[execution] backend``): ``local`` worker processes, or ``ray`` tasks on a cluster.
    backend: str = "local"
    #: The Ray cluster to join (``[execution] address``): ``auto``, host:port, or empty to start one on this machine.
    address: str = ""
    raw: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    report: Report = field(default_factory=Report)
