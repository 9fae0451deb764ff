"""What a training run measured: its curves, and the early-stop summary read from them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class Curves:
    """Metrics at each evaluation point."""

    iteration: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)


@dataclass
class TrainResult:
    """What one training run measured."""

    curves: Curves
    diverged: bool
    iterations: int
    wall_time: float
    #: The iteration at which patience stopped the run; ``None`` when it trained its full budget.
    stopped_at: int | None = None

    @property
    def early_stop_index(self) -> int:
        """Index of the evaluation with the lowest validation loss (the paper's early-stop criterion)."""
        losses = [v if math.isfinite(v) else math.inf for v in self.curves.val_loss]
        return min(range(len(losses)), key=losses.__getitem__) if losses else -1

    def summary(self) -> dict[str, float | int | None]:
        """Early-stop iteration and accuracies, and the final accuracy."""
        curves, index = self.curves, self.early_stop_index
        if index < 0:
            return {"early_stop_iteration": None, "early_stop_test_accuracy": None,
                    "early_stop_val_loss": None, "final_test_accuracy": None}
        return {
            "early_stop_iteration": curves.iteration[index],
            "early_stop_test_accuracy": curves.test_accuracy[index],
            "early_stop_val_loss": curves.val_loss[index],
            "final_test_accuracy": curves.test_accuracy[-1],
        }
