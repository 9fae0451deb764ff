"""Worker processes on this machine: one or more per GPU, or several on the CPU.

Each worker is a ``spawn``-ed process bound to one device. It builds its own
plugin registry, receives groups of runs through a pipe and sends back
progress and outcomes. A worker that dies (killed, segfault, out of host
memory) is seen through its process sentinel: the runs of its group are
reported ``crashed`` and a fresh
worker takes its place. Workers start when the first group for them comes. Workers ignore Ctrl-C, which the scheduler handles
by calling :meth:`LocalExecutor.shutdown`; they exit on SIGTERM, and also
when the scheduler's process is gone (a broken pipe, or on Linux a signal
when it dies), leaving checkpoints. A worker whose output folder cannot be
written (:class:`lthbench.store.StoreError`) sends that error back, and
:meth:`LocalExecutor.wait` raises it in the scheduler's process.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path

import torch

from lthbench.run.threads import apply_threads, default_threads
from lthbench.run.worker import Leave, Outcome, perform_group
from lthbench.run.executor import Group, ProgressCallback
from lthbench.lottery.workspace import Workspace
from lthbench.registry import Registry, default_registry
from lthbench.store import Store, StoreError

#: ``prctl`` option asking the kernel for a signal when the parent process dies (Linux).
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class WorkerSettings:
    """Everything a worker process needs to build its workspace (picklable)."""

    output: str
    data_root: Path
    download: bool
    device: str
    #: torch CPU threads of the worker (:func:`lthbench.run.threads.apply_threads`), at least 1.
    threads: int
    checkpoint_every: int
    registry_factory: Callable[[], Registry] = default_registry


def build_workspace(settings: WorkerSettings) -> Workspace:
    """The workspace of a process that trains: its torch threads set first, its device selected, its own registry.

    Threads are set before any parallel work, which would fix torch's
    inter-op threads. Used by the worker processes here and by the tasks of
    :mod:`lthbench.run.cluster`.
    """
    apply_threads(settings.threads)
    device = torch.device(settings.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return Workspace(settings.registry_factory(), Store(settings.output), settings.data_root, settings.download, device)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise Leave(128 + signum)


def _terminate_with_parent() -> None:
    """Get SIGTERM when the scheduler's process dies, even if killed (Linux); elsewhere the broken pipe tells."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        except (OSError, AttributeError):
            pass


def _worker_main(conn: Connection, settings: WorkerSettings) -> None:
    """A worker's life: build the workspace, then perform groups of runs until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    _terminate_with_parent()
    ws = build_workspace(settings)

    def send(message: tuple) -> None:
        try:
            conn.send(message)
        except OSError:  # the scheduler is gone: stop, keeping the checkpoint
            raise Leave(1) from None

    while True:
        try:
            group = conn.recv()
        except (EOFError, OSError):
            return
        if group is None:
            return
        try:
            outcomes = perform_group(group, ws, settings.checkpoint_every, lambda p: send(("progress", p)))
        except StoreError as error:
            send(("fatal", error))
            return
        send(("outcomes", outcomes))


@dataclass
class _Worker:
    process: BaseProcess
    conn: Connection
    settings: WorkerSettings
    group: Group | None = None


class LocalExecutor:
    """One worker process per entry of ``slots`` (a device may appear several times)."""

    def __init__(self, slots: list[WorkerSettings]):
        self._context = multiprocessing.get_context("spawn")
        self._slots = list(slots)
        #: The worker of each slot; ``None`` until a group needs it (a rerun with nothing to train starts none).
        self._workers: list[_Worker | None] = [None] * len(slots)
        self.capacity = len(slots)

    def _start(self, settings: WorkerSettings) -> _Worker:
        ours, theirs = self._context.Pipe()
        process = self._context.Process(target=_worker_main, args=(theirs, settings), daemon=True)
        process.start()
        theirs.close()
        return _Worker(process, ours, settings)

    def submit(self, group: Group) -> None:
        """Hand ``group`` to an idle worker, starting the slot's worker if it has none."""
        index = next(i for i, w in enumerate(self._workers) if w is None or w.group is None)
        if self._workers[index] is None:
            self._workers[index] = self._start(self._slots[index])
        worker = self._workers[index]
        worker.group = group
        worker.conn.send(group)

    def wait(self, timeout: float, on_progress: ProgressCallback) -> list[Outcome]:
        """Read workers' messages until some group ends or ``timeout`` passes."""
        busy = [w for w in self._workers if w is not None and w.group is not None]
        ready = wait([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout)
        outcomes = []
        for worker in busy:
            ended = self._receive(worker, on_progress) if worker.conn in ready else None
            if ended is None and not worker.process.is_alive():
                ended = self._replace(worker)
            outcomes += ended or []
        return outcomes

    def _receive(self, worker: _Worker, on_progress: ProgressCallback) -> list[Outcome] | None:
        """Drain one worker's pipe; the outcomes of its group if the group ended.

        A worker's :class:`~lthbench.store.StoreError` is raised here.
        """
        while worker.conn.poll():
            try:
                kind, payload = worker.conn.recv()
            except (EOFError, OSError):
                return None  # it died: the sentinel says so
            if kind == "progress":
                on_progress(payload)
            elif kind == "fatal":
                worker.group = None
                raise payload
            else:
                worker.group = None
                return payload
        return None

    def _replace(self, worker: _Worker) -> list[Outcome]:
        """Report the runs of a dead worker as crashed; a new worker takes its slot when a group needs it."""
        group, code = worker.group, worker.process.exitcode
        worker.conn.close()
        self._workers[self._workers.index(worker)] = None
        error = f"the worker process on {worker.settings.device} died (exit code {code}) during this run"
        if len(group) > 1:  # which run ended the process is unknown: each trains again alone
            return [Outcome(spec.run_id, "crashed_in_group", error) for spec in group]
        return [Outcome(spec.run_id, "crashed", error) for spec in group]

    def shutdown(self) -> None:
        """Ask idle workers to stop, terminate busy ones, and wait for all."""
        started = [worker for worker in self._workers if worker is not None]
        for worker in started:
            if not worker.process.is_alive():
                continue
            if worker.group is None:
                try:
                    worker.conn.send(None)
                except OSError:
                    worker.process.terminate()
            else:
                worker.process.terminate()  # SIGTERM: the worker exits, releasing its lock
        for worker in started:
            worker.process.join(timeout=30)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.conn.close()


def worker_slots(devices: list[str], jobs_per_device: int, cpu_jobs: int, threads: int = 0) -> list[tuple[str, int]]:
    """``(device, torch threads)`` of every worker: ``jobs_per_device`` per GPU, ``cpu_jobs`` on the CPU.

    Every worker gets ``threads`` threads when given (not 0), else the usable
    cores shared evenly among all workers (:func:`default_threads`), so that
    they do not oversubscribe them.
    """
    slots = [device for device in devices if device != "cpu" for _ in range(jobs_per_device)]
    slots += ["cpu"] * (cpu_jobs if "cpu" in devices else 0)
    threads = threads or default_threads(len(slots))
    return [(device, threads) for device in slots]
