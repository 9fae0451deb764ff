"""Carry out runs in the process that trains them: lock, check inputs, train (with checkpoints), store.

:func:`perform_group` is all a worker needs, on this machine or on a cluster
node that shares the output folder: it takes the lock of each run it is
given, so that no two processes train the same run, trains the runs it
holds (one alone, several together in one stacked step) and writes the
records that mark them finished.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import os
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from lthbench.lottery.execute import execute
from lthbench.lottery.prepare import inputs
from lthbench.lottery.record import failure_record, run_description
from lthbench.lottery.workspace import Workspace
from lthbench.run import locks
from lthbench.run.plan import RunSpec
from lthbench.store import NO_SPACE, Record, Store, StoreError, no_space

#: Seconds between two progress reports of one run.
PROGRESS_INTERVAL = 0.25


class Leave(SystemExit):
    """The runner's own way out of a worker process (SIGTERM, the scheduler gone): never a run's failure.

    Any other ``SystemExit`` raised while a run trains comes from a plugin
    and fails that run.
    """


#: What ends a process without being a run's failure: the runner leaving, Ctrl-C, and errors of the store itself.
PASSES_THROUGH = (Leave, KeyboardInterrupt, StoreError)


@dataclass(frozen=True)
class Progress:
    """How far a run's training has got."""

    run_id: str
    done: int
    total: int
    train_loss: float | None


@dataclass(frozen=True)
class Outcome:
    """How an attempt at a run ended.

    ``status`` is a record's status (``done``, ``diverged``, ``failed``), or
    ``busy`` (another live process holds the run), ``redo`` (tensor files of
    the runs in ``redo`` were unreadable: their records were deleted, they
    must run again first) or ``crashed`` (the worker process died; nothing
    was recorded).
    """

    run_id: str
    status: str
    error: str | None = None
    redo: tuple[str, ...] = ()


def _throttled(spec: RunSpec, report: Callable[[Progress], None]) -> Callable[[int, int, float | None], None]:
    last = 0.0

    def on_progress(done: int, total: int, train_loss: float | None) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= PROGRESS_INTERVAL or done == total:
            last = now
            report(Progress(spec.run_id, done, total, train_loss))

    return on_progress


def _broken_dependencies(spec: RunSpec, store: Store) -> tuple[str, ...]:
    """Dependencies with a tensor file that does not load, or without one that the run reads (:func:`inputs`)."""
    missing = {run_id for run_id, name in inputs(spec) if not store.tensors_path(run_id, name).is_file()}
    return tuple(dep for dep in spec.depends_on if dep in missing or store.unreadable_tensors(dep))


def _redo_unreadable_parents(spec: RunSpec, ws: Workspace) -> tuple[str, ...]:
    """Delete the records (and bad files) of dependencies whose tensor files are missing or do not load."""
    bad = _broken_dependencies(spec, ws.store)
    for dep in bad:
        lock = ws.store.lock_path(dep)
        if locks.acquire(lock):  # else a live process is redoing it already
            try:
                for path in ws.store.unreadable_tensors(dep):
                    path.unlink(missing_ok=True)
                ws.store.delete_record(dep)
            finally:
                locks.release(lock)
    return bad


def _recorded(spec: RunSpec, log: Callable[[str], None], work: Callable[[], Record]) -> Record:
    """The record ``work`` returns, or the failure record of the exception it raised.

    A ``SystemExit`` other than :class:`Leave` is a plugin's, and fails the
    run like any exception; :data:`PASSES_THROUGH` propagate.
    """
    try:
        return work()
    except PASSES_THROUGH:
        raise
    except (Exception, SystemExit) as error:  # a plugin, a bug or the GPU failing must fail this run only
        record = failure_record(spec, error)
        log(f"failed: {record['error']}\n{record['traceback']}")
        if isinstance(error, torch.cuda.OutOfMemoryError):
            record["error"] += " (CUDA out of memory: run fewer jobs per device, or a smaller batch)"
            _free_cuda_memory()
        return record


def _free_cuda_memory() -> None:
    gc.collect()
    torch.cuda.empty_cache()


def _claim(spec: RunSpec, ws: Workspace) -> Outcome | None:
    """Take the run's lock; ``None`` when the caller must now train the run, else the outcome (lock let go).

    The outcome is ``busy`` when another process holds the run, its record's
    status when it finished meanwhile elsewhere, ``redo`` when tensor files
    of its dependencies are unreadable.
    """
    lock = ws.store.lock_path(spec.run_id)
    if not locks.acquire(lock):
        return Outcome(spec.run_id, "busy")
    try:
        outcome = _no_need_to_train(spec, ws)
    except BaseException:
        locks.release(lock)
        raise
    if outcome is not None:
        locks.release(lock)
    return outcome


def _no_need_to_train(spec: RunSpec, ws: Workspace) -> Outcome | None:
    """The outcome of a locked run that is recorded already or must wait for its parents to be redone."""
    store = ws.store
    status = store.status(spec.run_id)
    if status is not None:  # finished meanwhile elsewhere
        return Outcome(spec.run_id, status, store.record(spec.run_id).get("error"))
    store.remove_temporary_files(spec.run_id)
    redo = _redo_unreadable_parents(spec, ws)
    if redo:
        return Outcome(spec.run_id, "redo", f"missing or unreadable tensor files in {', '.join(redo)}", redo)
    return None


@contextlib.contextmanager
def _run_log(spec: RunSpec, ws: Workspace) -> Iterator[Callable[[str], None]]:
    """Append time-stamped lines to the run's log file (a write refused for lack of space: :class:`StoreFullError`)."""
    path = ws.store.log_path(spec.run_id)
    with ws.store.open_log(spec.run_id) as log_file:
        def log(line: str) -> None:
            text = f"{datetime.datetime.now().isoformat(timespec='seconds')} {line}\n"
            try:
                log_file.write(text)
            except OSError as error:
                if error.errno in NO_SPACE:
                    raise no_space(error, path, len(text.encode())) from None
                raise

        yield log


def _store(spec: RunSpec, ws: Workspace, record: Record, log: Callable[[str], None]) -> Outcome:
    """Write the run's record, drop its checkpoint and tell the observers."""
    ws.store.write_record(spec.run_id, record)
    ws.store.remove_checkpoints(spec.run_id)
    log(f"finished: {record['status']}")
    try:
        ws.registry.run_finished(run_description(spec), record)
    except Exception as error:  # an observer's failure is reported, the record stays
        log(f"an observer failed: {type(error).__name__}: {error}")
    return Outcome(spec.run_id, record["status"], record.get("error"))


def perform_group(specs: Sequence[RunSpec], ws: Workspace, checkpoint_every: int,
                  report: Callable[[Progress], None] = lambda progress: None, where: str = "") -> list[Outcome]:
    """Carry out one unit of work: one run, or runs of one :func:`~lthbench.lottery.execute.batch_key`.

    Each run is locked and checked first: one that another process holds,
    that is recorded already or whose inputs must be redone gets that outcome
    untrained. The others train (:func:`_train`) and each gets its own record
    and log. Exceptions of a run (plugins, divergence, CUDA out of memory)
    and a plugin's ``SystemExit`` become a ``failed`` record.
    :data:`PASSES_THROUGH` (the runner leaving, Ctrl-C, an output folder out
    of space or with links) propagate, leaving the latest checkpoint for the
    next attempt and recording nothing. ``where`` adds to the log line that
    says where a run started (a cluster node, say).
    """
    outcomes, claimed = [], []
    try:
        for spec in specs:
            refused = _claim(spec, ws)
            if refused is None:
                claimed.append(spec)
            else:
                outcomes.append(refused)
        if claimed:
            outcomes += _train(claimed, ws, checkpoint_every, report, where)
        return outcomes
    finally:
        for spec in claimed:
            locks.release(ws.store.lock_path(spec.run_id))


def _train(specs: list[RunSpec], ws: Workspace, checkpoint_every: int,
           report: Callable[[Progress], None], where: str = "") -> list[Outcome]:
    """Train claimed runs, together when there are several, and store each one's record.

    A group that raises (whatever the cause: one member's plugin, memory)
    trains again one run at a time, each with its own checkpoint, so that an
    error fails only the run that causes it and the others still get their
    records. Observers hear ``run_started`` once per run, before its first
    training; an observer that raises there fails that run.
    """
    with contextlib.ExitStack() as stack:
        logs = [stack.enter_context(_run_log(spec, ws)) for spec in specs]

        def log_all(line: str) -> None:
            for log in logs:
                log(line)

        together = f" in a batched group of {len(specs)} runs" if len(specs) > 1 else ""
        log_all(f"started on {ws.device} by process {os.getpid()} on {socket.gethostname()}{where}{together}")
        reporters = {spec.run_id: _throttled(spec, report) for spec in specs}
        announced: set[str] = set()

        def attempt(group: list[RunSpec], log: Callable[[str], None]) -> list[Record]:
            for spec in group:
                if spec.run_id not in announced:
                    ws.registry.run_started(run_description(spec))
                    announced.add(spec.run_id)
            return execute(group, ws, checkpoint_every, lambda run_id, *progress: reporters[run_id](*progress), log)

        records = None
        if len(specs) > 1:
            try:
                records = attempt(specs, log_all)
            except PASSES_THROUGH:
                raise
            except (Exception, SystemExit) as error:  # whatever failed, training alone shows which run it belongs to
                if isinstance(error, torch.cuda.OutOfMemoryError):
                    _free_cuda_memory()
                for log in logs:
                    log(f"batched training failed ({type(error).__name__}: {error}); training this run alone")
        if records is None:
            records = [_recorded(spec, log, lambda: attempt([spec], log)[0]) for spec, log in zip(specs, logs)]
        return [_store(spec, ws, record, log) for spec, record, log in zip(specs, records, logs)]
