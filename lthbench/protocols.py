"""What a pruner, an initializer, an architecture and a data set implement.

Plugins return instances of these classes from the registration hooks in
:mod:`lthbench.hookspecs`. Each class is an abstract base: subclass it, set
``name`` and ``description``, and implement the abstract methods. Plugin
parameters are declared as a dataclass in the nested ``Params`` attribute; the
TOML table given for the plugin (``pruner = { name = "l1_filter", ... }``) is
validated against its fields, and ``__post_init__`` may raise ``ValueError``
to reject a value (the message reaches the user with the file and key).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch
from torch import nn


@dataclass(frozen=True)
class NoParams:
    """The parameters of a plugin that takes none."""


class Plugin(abc.ABC):
    """Common attributes of every registered implementation."""

    #: The name users write in TOML; unique within its kind.
    name: ClassVar[str]
    #: One line shown by ``lthbench plugins``.
    description: ClassVar[str] = ""
    #: Dataclass of the parameters the plugin accepts.
    Params: ClassVar[type] = NoParams


# --------------------------------------------------------------------------- architectures


@dataclass(frozen=True)
class ChannelGroup:
    """Output channels of one convolution that structured pruning may remove together.

    ``producer`` is the convolution's weight name (e.g. ``"features.0.weight"``).
    ``coupled`` are other per-channel parameters of the same channels: the conv
    bias and the BatchNorm weight and bias that follow it. ``consumers`` maps
    each parameter that reads these channels to how many consecutive input
    features one channel occupies there: 1 for a convolution's input channels,
    ``H*W`` for a linear layer after flattening an ``H x W`` feature map.
    """

    producer: str
    coupled: tuple[str, ...] = ()
    consumers: tuple[tuple[str, int], ...] = ()


@dataclass
class Network:
    """A built model plus what the lottery engine needs to know about its layers."""

    module: nn.Module
    #: Names of the weight parameters that pruners may prune.
    prunable: list[str]
    #: Name of the output layer's weight (pruned at ``output_rate`` by layerwise pruners).
    output: str
    #: Convolution filter groups for structured pruning; empty if none is safe to prune.
    channel_groups: list[ChannelGroup] = field(default_factory=list)


class Architecture(Plugin):
    """A network family that can be built for a data set's input shape and classes.

    An architecture whose ``name`` ends in ``":*"`` (e.g. ``"timm:*"``) is a
    family: ``architecture = "timm:resnet18"`` resolves to it, with the part
    after the colon given as its ``model`` parameter.
    """

    @abc.abstractmethod
    def build(self, input_shape: tuple[int, ...], num_classes: int, params: Any) -> Network:
        """Return a freshly constructed network (weights not yet initialized)."""

    @abc.abstractmethod
    def initialize(self, module: nn.Module, generator: torch.Generator) -> None:
        """Draw every parameter of ``module`` in place from the architecture's init distribution.

        The same function draws θ₀ and the ``reinit`` control, with different
        generators, so the control comes from exactly the same distribution.
        """


# --------------------------------------------------------------------------- data sets


@dataclass
class TensorData:
    """A whole split as tensors: ``images`` uint8 ``N x C x H x W``, ``labels`` int64 ``N``."""

    images: torch.Tensor
    labels: torch.Tensor


class Dataset(Plugin):
    """An image-classification data set loaded whole into memory."""

    #: Number of classes.
    num_classes: ClassVar[int]
    #: ``(C, H, W)`` of one image.
    input_shape: ClassVar[tuple[int, int, int]]
    #: Per-channel mean and standard deviation of the training images, in [0, 1] units.
    mean: ClassVar[tuple[float, ...]]
    std: ClassVar[tuple[float, ...]]
    #: Whether random crop (pad 4) and horizontal flip suit this data set by default.
    default_augment: ClassVar[bool] = False
    #: Images of the training and test splits, when known without loading them; ``None`` if unknown.
    #: Validation refuses subsets, a validation split and a batch that do not fit a declared size (a
    #: run checks them on the loaded data either way).
    train_size: ClassVar[int | None] = None
    test_size: ClassVar[int | None] = None

    def check(self, root: Path, download: bool) -> None:
        """Raise :class:`lthbench.errors.DataNotFound` if ``load`` could not succeed.

        Called by ``lthbench validate`` and before a run starts; must be cheap
        (look for files, do not read them).
        """

    @abc.abstractmethod
    def load(self, root: Path, train: bool, download: bool) -> TensorData:
        """Return the training or test split found under ``root``.

        Raise :class:`lthbench.errors.DataNotFound` when the files are not
        there and ``download`` is false, saying where it looked and how to get them.
        """


# --------------------------------------------------------------------------- pruners


def level_rate(rate: float, level: int, one_shot: bool) -> float:
    """The fraction to prune at ``level`` for a per-round ``rate``.

    Iterative mode prunes ``rate`` of what remains each round; one-shot mode
    prunes the dense weights straight to ``(1 - rate) ** level`` remaining.
    """
    return 1 - (1 - rate) ** level if one_shot else rate


@dataclass
class PruningContext:
    """Everything a pruner sees when asked for the next round's masks.

    ``weights`` are the trained weights (masked) of every parameter of the
    network, by name; ``masks`` the current masks (bool tensors, ``True`` =
    kept) of every prunable weight and of any parameter masked structurally.
    A pruner returns new masks that keep nothing the current ones pruned.
    """

    network: Network
    weights: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]
    #: Fraction of the *remaining* prunable weights to prune this round.
    rate: float
    #: Rate for the output layer used by layerwise pruners (the schedule's ``output_rate``, else half of ``rate``).
    output_rate: float
    #: Seeded generator for any random choice.
    generator: torch.Generator
    #: Run another registered pruner by name, with its default parameters, on this same context (used by controls).
    delegate: Callable[[str], dict[str, torch.Tensor]]
    #: The pruning level (round) being made, from 1.
    level: int = 1
    #: One-shot mode: each level prunes the dense weights directly, so ``rate`` is already compounded.
    one_shot: bool = False

    def level_rate(self, rate: float) -> float:
        """The fraction to prune now for a per-round ``rate`` (e.g. a per-layer override): :func:`level_rate`.

        ``rate`` and ``output_rate`` of the context are given already converted.
        """
        return level_rate(rate, self.level, self.one_shot)


class Pruner(Plugin):
    """Chooses which weights to remove, one round at a time."""

    def mimics(self, params: Any) -> str | None:
        """The name of the pruner whose per-layer counts this one copies, if it is such a control.

        A cell pruned by a control is a control of the cell of the same
        experiment, architecture, data set and training pruned by the named
        pruner: the report compares that cell's ticket with this cell's ticket
        (the ``random mask`` comparison). ``None``, the default, for a pruner
        that is no control.
        """
        return None

    def check(self, params: Any, network: Network) -> None:
        """Raise ``ValueError`` if ``params`` cannot prune ``network`` (say, they name a layer it lacks).

        Called when a benchmark file is validated, before anything trains,
        once per cell, with the network built on PyTorch's ``meta`` device:
        its layer names, shapes, output layer and channel groups are real,
        its values are not. The message reaches the user with the file and
        key. The default accepts every network.
        """

    @abc.abstractmethod
    def prune(self, context: PruningContext, params: Any) -> dict[str, torch.Tensor]:
        """Return the new masks: a bool tensor per prunable weight (``True`` = kept)."""


# --------------------------------------------------------------------------- initializers


@dataclass
class InitContext:
    """What an initializer may reset the surviving weights from."""

    network: Network
    architecture: Architecture
    #: θ₀: the dense network's initial state for this seed.
    initial_state: dict[str, torch.Tensor]
    #: Load the dense run's state after ``k`` iterations (saved during that run).
    rewind_state: Callable[[int], dict[str, torch.Tensor]]
    #: Iterations per epoch of the training set, to convert epochs to iterations.
    iterations_per_epoch: int
    #: Seeded generator derived from (seed, round, initializer), distinct from θ₀'s.
    generator: torch.Generator
    seed: int
    round: int


@dataclass
class InitialState:
    """An initializer's answer: the state to load and where training resumes."""

    state: dict[str, torch.Tensor]
    #: Iteration the learning-rate schedule and the data order start from.
    start_iteration: int = 0


class Initializer(Plugin):
    """Decides what the surviving weights are reset to before a pruned network trains."""

    def rewind_iteration(self, params: Any, iterations_per_epoch: int) -> int | None:
        """The dense-run iteration whose weights this initializer needs saved, if any."""
        return None

    @abc.abstractmethod
    def initialize(self, context: InitContext, params: Any) -> InitialState:
        """Return the initial state for a pruned run (masks are applied afterwards)."""
