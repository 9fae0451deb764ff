"""What ``lthbench run`` shows while it works: rich progress bars on a terminal, plain lines elsewhere.

On a terminal: one bar for the whole matrix (runs finished of runs to do,
with an ETA) and one bar per run in flight (iteration, training loss, ETA).
Piped into a file or CI log: one line per run started and finished. With a
quiet console: nothing (the command prints its summary itself).
"""

from __future__ import annotations

from typing import Any, Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from lthbench.run.plan import RunSpec
from lthbench.run.status import RunStatus
from lthbench.run.worker import Outcome
from lthbench.run.worker import Progress as RunProgress


def describe(run: RunSpec) -> str:
    """A run in words: experiment, pruner, seed, round, initializer."""
    return (f"{run.cell.experiment} · {run.cell.pruner.label} · seed {run.seed} · "
            f"round {run.round} · {run.initializer_label}")


def outcome_text(record: dict[str, Any] | None, outcome: Outcome) -> str:
    """How a run ended, in one line."""
    if record is None or record.get("status") != RunStatus.DONE:
        return f"{outcome.status}: {outcome.error}"
    return (f"done: test accuracy {record['early_stop_test_accuracy']:.4f} at iteration "
            f"{record['early_stop_iteration']}, {100 * record['weights_remaining']:.1f}% weights remaining, "
            f"{record['wall_time']:.1f} s")


class Display(Protocol):
    """Receives the scheduler's events."""

    def add_runs(self, count: int) -> None:
        """``count`` more runs are to be done (the total grows; it shrinks by runs that will not run)."""

    def started(self, run: RunSpec) -> None:
        """A run was submitted."""

    def progress(self, progress: RunProgress) -> None:
        """A run in flight reported its iteration."""

    def finished(self, run: RunSpec, outcome: Outcome, record: dict[str, Any] | None) -> None:
        """A run ended (or was found done by another process)."""

    def close(self) -> None:
        """Stop drawing."""


class PlainDisplay:
    """One line per run started and finished; nothing when the console is quiet."""

    def __init__(self, console: Console):
        self.console = console
        self.total = 0
        self.ended = 0

    def add_runs(self, count: int) -> None:
        """Grow (or, for runs that will not run, shrink) the number of runs to do."""
        self.total += count

    def started(self, run: RunSpec) -> None:
        """Print that ``run`` starts."""
        self.console.print(f"start {describe(run)} ({run.run_id})", highlight=False)

    def progress(self, progress: RunProgress) -> None:
        """Per-iteration progress is not printed in plain mode."""

    def finished(self, run: RunSpec, outcome: Outcome, record: dict[str, Any] | None) -> None:
        """Print ``[ended/total] run: outcome``."""
        self.ended += 1
        self.console.print(f"[{self.ended}/{self.total}] {describe(run)}: {outcome_text(record, outcome)}",
                           highlight=False, markup=False)

    def close(self) -> None:
        """Nothing to stop."""


class RichDisplay(PlainDisplay):
    """Live bars: the matrix overall and each run in flight; finished runs are printed above them."""

    def __init__(self, console: Console):
        super().__init__(console)
        self.bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("{task.fields[loss]}"), TimeRemainingColumn(), console=console)
        self.overall: TaskID = self.bars.add_task("matrix (runs)", total=0, loss="")
        self.tasks: dict[str, TaskID] = {}
        self.bars.start()

    def add_runs(self, count: int) -> None:
        """Change the overall bar's total."""
        super().add_runs(count)
        self.bars.update(self.overall, total=self.total)

    def started(self, run: RunSpec) -> None:
        """Add a bar for ``run``."""
        label = f"  {run.cell.experiment} · seed {run.seed} · round {run.round} · {run.initializer_label}"
        self.tasks[run.run_id] = self.bars.add_task(label, total=None, loss="")

    def progress(self, progress: RunProgress) -> None:
        """Move a run's bar."""
        task = self.tasks.get(progress.run_id)
        if task is not None:
            loss = f"loss {progress.train_loss:.4f}" if progress.train_loss is not None else ""
            self.bars.update(task, completed=progress.done, total=progress.total, loss=loss)

    def finished(self, run: RunSpec, outcome: Outcome, record: dict[str, Any] | None) -> None:
        """Remove the run's bar, print its outcome, advance the overall bar."""
        task = self.tasks.pop(run.run_id, None)
        if task is not None:
            self.bars.remove_task(task)
        super().finished(run, outcome, record)
        self.bars.update(self.overall, completed=self.ended)

    def close(self) -> None:
        """Stop the live display."""
        self.bars.stop()


def make_display(console: Console) -> Display:
    """Bars on a terminal, lines elsewhere."""
    return RichDisplay(console) if console.is_terminal and not console.quiet else PlainDisplay(console)
