"""Training checkpoints, and the hooks through which a training reports to whoever runs it.

:func:`lthbench.lottery.execute.execute` builds the hooks of each training
it hands to :func:`lthbench.train.loop.train`. A checkpoint holds what a
training cannot recompute (the stack's weights, the optimizer, the curves,
the running losses); the data order and augmentation are pure functions of
(seed, iteration), so resuming gives the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lthbench.store import load_state, readable, save_state

if TYPE_CHECKING:
    from lthbench.train.stack import Stack


@dataclass(frozen=True)
class Checkpointer:
    """Saves one run's training state at ``path`` every ``every`` iterations (0: never) and restores it."""

    path: Path
    every: int

    def due(self, done: int, total: int) -> bool:
        """Whether to save after ``done`` iterations (never after the last one: the record follows)."""
        return self.every > 0 and done % self.every == 0 and done < total

    def save(self, state: dict[str, Any]) -> None:
        """Save ``state`` atomically, listing the run's tensor files that exist at this point."""
        files = sorted(p.name for p in self.path.parent.glob("*.pt") if p != self.path)
        save_state(self.path, {**state, "files": files})

    def load(self, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
        """The saved state, or ``None`` (and the checkpoint deleted) when it cannot be trusted.

        It cannot be when it does not load (truncated by a crash), belongs to
        other training (its ``fingerprint`` differs), or a tensor file that
        existed when it was saved (θ_k of a dense run) is gone or unreadable.
        """
        if not self.path.exists():
            return None
        try:
            state = load_state(self.path)
        except Exception:  # torch raises several types for truncated or garbled files
            state = None
        if (not isinstance(state, dict) or state.get("fingerprint") != fingerprint
                or not all(readable(self.path.parent / name) for name in state.get("files", ()))):
            self.remove()
            return None
        return state

    def remove(self) -> None:
        """Delete the checkpoint (the run finished, or it was not trustworthy)."""
        self.path.unlink(missing_ok=True)


def _ignore(*args: Any) -> None:
    """The default hook: do nothing."""


@dataclass(frozen=True)
class Snapshots:
    """The weights a training hands out as it passes given iterations (θ_k, to rewind to).

    ``keep(k, stack)`` is called before iteration ``k`` for every ``k`` in
    ``at`` that the training passes, its end included. With ``stop``, the
    training ends at the largest ``k``: learning rates and data order stay
    those of the full training, so ``keep`` sees the full training's state
    after ``k`` iterations.
    """

    at: frozenset[int]
    keep: Callable[[int, Stack], None]
    stop: bool = False


@dataclass(frozen=True)
class TrainingHooks:
    """What a training reports to, where it checkpoints, and which weights it hands out on its way."""

    checkpointer: Checkpointer | None = None
    #: ``(iterations done, total iterations, each model's latest training loss or None)``; called every iteration.
    on_progress: Callable[[int, int, list[float | None]], None] = field(default=_ignore)
    #: One line for the log of every run in the training (evaluations, resumption).
    log: Callable[[str], None] = field(default=_ignore)
    #: The iterations whose weights to hand out (a dense run's rewinding points), if any.
    snapshots: Snapshots | None = None
    #: ``(model index, iteration, metrics)`` at every evaluation of every model that has not diverged before it.
    on_evaluation: Callable[[int, int, dict[str, float]], None] = field(default=_ignore)
