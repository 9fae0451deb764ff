"""What ``lthbench run`` shows while it works: rich progress bars on a terminal, plain lines elsewhere.

On a terminal: one bar for the whole matrix (runs settled of runs to do,
with the time left) and one bar per run in flight (iteration, training loss,
time left). Piped into a file or CI log: one line per run started and
finished, with the matrix's time left. With a quiet console: nothing (the
command prints its summary itself).

The time left is :class:`Eta`'s: training iterations left in the matrix over
the iterations per second measured since the first progress report, all
workers together (not a window of the last seconds, which shows nothing
useful when runs take minutes). Runs that a failure blocks count as settled,
so the counter's total never changes under the reader.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

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


def duration(seconds: float) -> str:
    """``seconds`` in words: ``45 s``, ``12 min``, ``3 h 20 min``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds // 3600:.0f} h {seconds % 3600 / 60:.0f} min"


class Eta:
    """Time left of a matrix: iterations left over the iterations per second measured so far, all runs together.

    A run's length is known from its first progress report; runs not yet
    started are taken to be as long as the mean of those seen.
    """

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.started: float | None = None
        self.done_total = 0
        self.runs: dict[str, tuple[int, int]] = {}  # run id -> (done, total) of runs in flight
        self.lengths: list[int] = []

    def progress(self, run_id: str, done: int, total: int) -> None:
        """A run reported ``done`` of ``total`` iterations."""
        if self.started is None:
            self.started = self.clock()
        before, known = self.runs.get(run_id, (done, 0))
        if not known:
            self.lengths.append(total)
        self.done_total += max(0, done - before)
        self.runs[run_id] = (done, total)

    def finished(self, run_id: str) -> None:
        """A run ended (its remaining iterations, if patience stopped it, are not left to do)."""
        self.runs.pop(run_id, None)

    def seconds_left(self, runs_left: int) -> float | None:
        """Seconds until ``runs_left`` runs (those in flight included) are done; ``None`` before any measurement."""
        if self.started is None or not self.lengths or not self.done_total:
            return None
        elapsed = self.clock() - self.started
        mean = sum(self.lengths) / len(self.lengths)
        in_flight = sum(total - done for done, total in self.runs.values())
        waiting = max(0, runs_left - len(self.runs))
        return (in_flight + waiting * mean) / (self.done_total / elapsed) if elapsed > 0 else None

    def text(self, runs_left: int) -> str:
        """``about 12 min left``, or empty before any measurement."""
        left = self.seconds_left(runs_left)
        return "" if left is None else f"about {duration(left)} left"


class PlainDisplay:
    """One line per run started and finished; nothing when the console is quiet."""

    def __init__(self, console: Console):
        self.console = console
        self.total = 0
        self.ended = 0
        #: Runs that will not run after all (blocked by a failure): settled, the total stays.
        self.skipped = 0
        self.eta = Eta()

    @property
    def settled(self) -> int:
        """Runs finished or known not to run."""
        return self.ended + self.skipped

    def add_runs(self, count: int) -> None:
        """Grow the number of runs to do; runs that will not run (``count`` < 0) count as settled."""
        if count >= 0:
            self.total += count
        else:
            self.skipped -= count

    def started(self, run: RunSpec) -> None:
        """Print that ``run`` starts."""
        self.console.print(f"start {describe(run)} ({run.run_id})", highlight=False)

    def progress(self, progress: RunProgress) -> None:
        """Per-iteration progress is not printed in plain mode; it feeds the time left."""
        self.eta.progress(progress.run_id, progress.done, progress.total)

    def finished(self, run: RunSpec, outcome: Outcome, record: dict[str, Any] | None) -> None:
        """Print ``[settled/total] run: outcome; time left``."""
        self.ended += 1
        self.eta.finished(run.run_id)
        left = self.eta.text(self.total - self.settled)
        self.console.print(f"[{self.settled}/{self.total}] {describe(run)}: {outcome_text(record, outcome)}"
                           f"{'; ' + left if left else ''}", highlight=False, markup=False)

    def close(self) -> None:
        """Nothing to stop."""


class RichDisplay(PlainDisplay):
    """Live bars: the matrix overall and each run in flight; finished runs are printed above them."""

    def __init__(self, console: Console):
        super().__init__(console)
        self.bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("{task.fields[loss]}"), console=console)
        self.overall: TaskID = self.bars.add_task("matrix (runs)", total=0, loss="")
        self.tasks: dict[str, TaskID] = {}
        self.bars.start()

    def add_runs(self, count: int) -> None:
        """Change the overall bar's total."""
        super().add_runs(count)
        self.bars.update(self.overall, total=self.total, completed=self.settled)

    def started(self, run: RunSpec) -> None:
        """Add a bar for ``run``."""
        label = f"  {run.cell.experiment} · seed {run.seed} · round {run.round} · {run.initializer_label}"
        self.tasks[run.run_id] = self.bars.add_task(label, total=None, loss="")

    def progress(self, progress: RunProgress) -> None:
        """Move a run's bar."""
        super().progress(progress)
        self.bars.update(self.overall, loss=self.eta.text(self.total - self.settled))
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
        self.bars.update(self.overall, completed=self.settled)

    def close(self) -> None:
        """Stop the live display."""
        self.bars.stop()


def make_display(console: Console) -> Display:
    """Bars on a terminal, lines elsewhere."""
    return RichDisplay(console) if console.is_terminal and not console.quiet else PlainDisplay(console)
