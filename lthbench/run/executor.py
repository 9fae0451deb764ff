"""Where runs execute: the boundary between the scheduler and the machines.

The scheduler (:mod:`lthbench.run.scheduler`) decides *what* runs *when*: it
submits a run once the records of the runs it depends on exist, and reacts
to outcomes. It submits *groups*: a tuple of one run, or of several runs
that train together in one batched step (see
:func:`lthbench.lottery.execute.batch_key`). An executor decides *where*; it
implements three methods:

``submit(group)``
    Start (or queue) one group. At most ``capacity`` groups are in flight:
    a group is in flight until the outcomes of all its runs are returned.
``wait(timeout, on_progress) -> list[Outcome]``
    Block until some submitted groups end, or ``timeout`` seconds pass;
    return the outcomes of their runs (possibly none), all the outcomes of
    a group at once. Progress reports that arrive meanwhile go to
    ``on_progress``.
``shutdown()``
    Stop every worker. Runs cut short keep their checkpoints; the next
    ``lthbench run`` continues them.

Whatever process trains a group calls
:func:`lthbench.run.worker.perform_group`, which locks its runs, trains them
and writes their records into the shared output folder. A cluster backend
therefore submits jobs that build a :class:`~lthbench.lottery.execute.Workspace` on
the node and call ``perform_group``; it
needs nothing from the lottery code. Two executors ship here:
:class:`InProcessExecutor` (one run at a time, in this process) and
:class:`lthbench.run.pool.LocalExecutor` (worker processes, one or
more per device).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from lthbench.run.worker import Outcome, Progress, perform_group
from lthbench.lottery.workspace import Workspace
from lthbench.run.plan import RunSpec

ProgressCallback = Callable[[Progress], None]
#: Runs submitted together: one run, or several that train in one batched step.
Group = tuple[RunSpec, ...]


class Executor(Protocol):
    """Runs submitted training runs somewhere and reports how they ended."""

    #: How many groups may be in flight at once.
    capacity: int

    def submit(self, group: Group) -> None:
        """Start or queue one group of runs whose dependencies are finished."""

    def wait(self, timeout: float, on_progress: ProgressCallback) -> list[Outcome]:
        """Outcomes of the runs of groups that ended, after blocking up to ``timeout`` seconds for one."""

    def shutdown(self) -> None:
        """Stop all workers, keeping finished records and the latest checkpoints."""


class InProcessExecutor:
    """Runs one group at a time in the calling process (simple tracebacks, no start-up cost)."""

    capacity = 1

    def __init__(self, ws: Workspace, checkpoint_every: int):
        self.ws = ws
        self.checkpoint_every = checkpoint_every
        self._queue: list[Group] = []

    def submit(self, group: Group) -> None:
        """Queue ``group``; it trains during the next :meth:`wait`."""
        self._queue.append(group)

    def wait(self, timeout: float, on_progress: ProgressCallback) -> list[Outcome]:
        """Train the queued group, or sleep ``timeout`` seconds when there is none."""
        if not self._queue:
            time.sleep(timeout)
            return []
        return perform_group(self._queue.pop(0), self.ws, self.checkpoint_every, on_progress)

    def shutdown(self) -> None:
        """Forget queued runs (nothing runs in the background)."""
        self._queue.clear()
