"""Where runs execute: the boundary between the scheduler and the machines.

The scheduler (:mod:`lthbench.run.scheduler`) decides *what* runs *when* and
submits *groups*: one run, or several that train together in one batched
step (see :func:`lthbench.lottery.execute.batch_key`). An executor decides
*where* (the three methods of :class:`Executor`). Whatever process trains a
group calls :func:`lthbench.run.worker.perform_group`, which locks its runs,
trains them and writes their records into the shared output folder; a
cluster backend therefore needs nothing from the lottery code. Two executors
ship: :class:`InProcessExecutor` and :class:`lthbench.run.pool.LocalExecutor`.
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
        """Start or queue one group of runs whose dependencies are finished (in flight until all its outcomes return)."""

    def wait(self, timeout: float, on_progress: ProgressCallback) -> list[Outcome]:
        """Outcomes of the runs of groups that ended (a group's all at once), blocking up to ``timeout`` seconds.

        Progress reports that arrive meanwhile go to ``on_progress``.
        """

    def shutdown(self) -> None:
        """Stop all workers; runs cut short keep their checkpoints, which the next ``lthbench run`` continues."""


class InProcessExecutor:
    """Runs one group at a time in the calling process (simple tracebacks, no start-up cost).

    A plugin's exception or ``SystemExit`` fails its run; a plugin that ends
    the process itself (``os._exit``, a crash) ends the matrix with it, which
    is why ``lthbench run`` trains in :class:`lthbench.run.pool.LocalExecutor`
    worker processes instead.
    """

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
