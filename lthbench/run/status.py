"""What state a run of the matrix is in: the status vocabulary, and the one rule deriving it from the records.

A run with a record is ``done``, ``diverged`` or ``failed``. A run without
one is ``blocked`` when a run it depends on failed, diverged or is blocked
itself (it will not run), ``running`` when a live process works on it, and
``pending`` otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum


class RunStatus(StrEnum):
    """The status of one run of the matrix."""

    DONE = "done"
    DIVERGED = "diverged"
    FAILED = "failed"
    BLOCKED = "blocked"
    PENDING = "pending"
    RUNNING = "running"


#: Statuses a record holds: the run is finished (a ``failed`` one runs again only with ``--retry-failed``).
RECORDED = frozenset({RunStatus.DONE, RunStatus.DIVERGED, RunStatus.FAILED})
#: Statuses that stop the runs depending on a run.
STOPPED = frozenset({RunStatus.FAILED, RunStatus.DIVERGED, RunStatus.BLOCKED})
#: Recorded statuses of runs that did not end well; their record holds the error.
FAILURES = RECORDED & STOPPED


def derive_statuses(runs: Mapping[str, Sequence[str]], recorded: Mapping[str, str],
                    running: Callable[[str], bool] = lambda run_id: False) -> dict[str, tuple[str, str | None]]:
    """``(status, reason)`` of every run of ``runs`` (run id → the ids it depends on).

    ``recorded`` holds the status of every run with a record; its reason is
    ``None``. A blocked run's reason names the first dependency that stops
    it. ``running(run_id)`` tells whether a live process works on a run
    without a record. A dependency missing from ``runs`` counts as pending
    unless it is recorded.
    """
    derived: dict[str, tuple[str, str | None]] = {}

    def derive(run_id: str) -> tuple[str, str | None]:
        if run_id not in derived:
            derived[run_id] = _derive(run_id)
        return derived[run_id]

    def _derive(run_id: str) -> tuple[str, str | None]:
        if run_id in recorded:
            return recorded[run_id], None
        for dep in runs.get(run_id, ()):
            status = derive(dep)[0]
            if status in STOPPED:
                return RunStatus.BLOCKED, f"not run: it depends on run {dep} ({status})"
        return (RunStatus.RUNNING if running(run_id) else RunStatus.PENDING), None

    return {run_id: derive(run_id) for run_id in runs}
