"""How many CPU threads torch may use in a process that trains: chosen here, never inherited.

torch's default is one intra-op thread per core of the machine. With several
worker processes, or with any other busy process on the same cores, those
threads wait on each other at every operation and training gets several times
slower. So every process that trains calls :func:`apply_threads` first, with
``--threads`` / ``[benchmark] threads`` when given and :func:`default_threads`
otherwise: the cores this process may use (its CPU affinity, as set by
``taskset`` or a cluster's scheduler) shared evenly among the parallel jobs.

Public API: :func:`usable_cores`, :func:`default_jobs`, :func:`default_threads`,
:func:`apply_threads`, :data:`CPU_BATCH_TRIALS`.
"""

from __future__ import annotations

import os

import torch

#: ``--batch-trials`` on the CPU when not given: stacks of up to this many runs train in one step.
CPU_BATCH_TRIALS = 4


def usable_cores() -> int:
    """The number of cores this process may run on (its affinity mask; the machine's count where that is unknown)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def default_jobs(cores: int | None = None) -> int:
    """Worker processes on the CPU when ``--jobs`` is not given: one per usable core, at most 8."""
    return max(1, min(8, usable_cores() if cores is None else cores))


def default_threads(jobs: int, cores: int | None = None) -> int:
    """Threads of each of ``jobs`` parallel training processes: the usable cores divided among them, at least 1."""
    return max(1, (usable_cores() if cores is None else cores) // max(1, jobs))


def apply_threads(threads: int) -> int:
    """Set torch's intra-op and inter-op threads of this process to ``threads`` (>= 1); returns ``threads``.

    The inter-op count can be set only before the process's first parallel
    work; where that has happened it is left as it is (the intra-op count,
    which is what training uses, is always set).
    """
    if threads < 1:
        raise ValueError(f"threads = {threads} must be at least 1")
    torch.set_num_threads(threads)
    if torch.get_num_interop_threads() != threads:
        try:
            torch.set_num_interop_threads(threads)
        except RuntimeError:  # parallel work has started in this process: too late to change
            pass
    return threads
