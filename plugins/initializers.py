"""Built-in initializers: what the surviving weights of a pruned network start from."""

from __future__ import annotations

import copy
from dataclasses import dataclass

from lthbench import hookimpl
from lthbench.protocols import InitContext, Initializer, InitialState


class Original(Initializer):
    """The winning ticket: reset to θ₀, the dense network's own initial weights."""

    name = "original"
    description = "reset survivors to the dense network's initial weights θ₀ (the ticket)"

    def initialize(self, context: InitContext, params: object) -> InitialState:
        """Return θ₀ unchanged."""
        return InitialState({k: v.clone() for k, v in context.initial_state.items()})


class Reinit(Initializer):
    """The control: a fresh draw from the architecture's init distribution."""

    name = "reinit"
    description = "random reinitialisation from the same distribution as θ₀ (the control)"

    def initialize(self, context: InitContext, params: object) -> InitialState:
        """Draw new weights with the (seed, round)-derived generator of the context."""
        module = copy.deepcopy(context.network.module)
        context.architecture.initialize(module, context.generator)
        return InitialState({k: v.detach().clone() for k, v in module.state_dict().items()})


@dataclass(frozen=True)
class RewindParams:
    """Where to rewind to: an iteration or an epoch of the dense run (one of the two)."""

    iteration: int = 0
    epoch: float = 0.0

    def __post_init__(self) -> None:
        if self.iteration < 0 or self.epoch < 0:
            raise ValueError("iteration and epoch must be non-negative")
        if (self.iteration > 0) == (self.epoch > 0):
            raise ValueError("rewind needs exactly one of iteration = k or epoch = e, above 0")


class Rewind(Initializer):
    """Late rewinding (Frankle et al. 2019): reset to θ_k, the dense run's weights after k iterations."""

    name = "rewind"
    description = "late rewinding to θ_k, the dense run's weights after k iterations (iteration = k or epoch = e)"
    Params = RewindParams

    def rewind_iteration(self, params: RewindParams, iterations_per_epoch: int) -> int:
        """The dense-run iteration whose weights must be saved."""
        return params.iteration or round(params.epoch * iterations_per_epoch)

    def initialize(self, context: InitContext, params: RewindParams) -> InitialState:
        """Return θ_k; training resumes the learning-rate schedule and data order from k."""
        k = self.rewind_iteration(params, context.iterations_per_epoch)
        return InitialState(context.rewind_state(k), start_iteration=k)


@hookimpl
def lthbench_initializers() -> list[Initializer]:
    """The built-in initializers."""
    return [Original(), Reinit(), Rewind()]
