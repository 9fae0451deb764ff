"""Carry out runs in the process that trains them: lock, check inputs, train (with checkpoints), store.

:func:`perform_group` is all a worker needs, on this machine or on a cluster
node that shares the output folder: it takes the lock of each run it is
given, so that no two processes train the same run, and writes the records
that mark them finished. One run trains alone with checkpoints
(:func:`perform`); several train together in one batched step.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import os
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lthbench.run import locks
from lthbench.train.checkpoint import Checkpointer, TrainingHooks
from lthbench.lottery.execute import Workspace, execute, execute_group, run_description
from lthbench.run.plan import RunSpec

#: Statuses of a run that has a record; ``failed`` ones run again only with ``--retry-failed``.
FINISHED = ("done", "diverged", "failed")
#: Seconds between two progress reports of one run.
PROGRESS_INTERVAL = 0.25


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


def failure_record(spec: RunSpec, error: BaseException) -> dict[str, Any]:
    """The record of a run that raised: its error and traceback, no metrics."""
    return {**run_description(spec), "status": "failed", "error": f"{type(error).__name__}: {error}",
            "traceback": "".join(traceback.format_exception(error)), "weights_remaining": None,
            "curves": {}, "layers": {}}


def _throttled(spec: RunSpec, report: Callable[[Progress], None]) -> Callable[[int, int, float | None], None]:
    last = 0.0

    def on_progress(done: int, total: int, train_loss: float | None) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= PROGRESS_INTERVAL or done == total:
            last = now
            report(Progress(spec.run_id, done, total, train_loss))

    return on_progress


def _redo_unreadable_parents(spec: RunSpec, ws: Workspace) -> tuple[str, ...]:
    """Delete the records (and bad files) of dependencies whose tensor files do not load."""
    bad = tuple(dep for dep in spec.depends_on if ws.store.unreadable_tensors(dep))
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


def _hooks(spec: RunSpec, ws: Workspace, checkpoint_every: int, report: Callable[[Progress], None],
           log: Callable[[str], None]) -> TrainingHooks:
    checkpointer = Checkpointer(ws.store.checkpoint_path(spec.run_id), checkpoint_every)
    return TrainingHooks(checkpointer, _throttled(spec, report), log)


def _attempt(spec: RunSpec, log: Callable[[str], None], work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The record ``work`` returns, or the failure record of the exception it raised."""
    try:
        return work()
    except Exception as error:  # a plugin, a bug or the GPU failing must fail this run only
        record = failure_record(spec, error)
        log(f"failed: {record['error']}\n{record['traceback']}")
        if isinstance(error, torch.cuda.OutOfMemoryError):
            record["error"] += " (CUDA out of memory: run fewer jobs per device, or a smaller batch)"
            _free_cuda_memory()
        return record


def _free_cuda_memory() -> None:
    gc.collect()
    torch.cuda.empty_cache()


def _execute_one(spec: RunSpec, ws: Workspace, hooks: TrainingHooks) -> dict[str, Any]:
    ws.registry.run_started(run_description(spec))
    return execute(spec, ws, hooks)


def _train_alone(spec: RunSpec, ws: Workspace, checkpoint_every: int, report: Callable[[Progress], None],
                 log: Callable[[str], None]) -> dict[str, Any]:
    """Announce and train one run with checkpoints; its record, ``failed`` if it raised."""
    hooks = _hooks(spec, ws, checkpoint_every, report, log)
    return _attempt(spec, log, lambda: _execute_one(spec, ws, hooks))


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
    record = store.record(spec.run_id)
    if record is not None and record.get("status") in FINISHED:
        return Outcome(spec.run_id, record["status"], record.get("error"))  # finished meanwhile elsewhere
    store.remove_temporary_files(spec.run_id)
    redo = _redo_unreadable_parents(spec, ws)
    if redo:
        return Outcome(spec.run_id, "redo", f"unreadable tensor files in {', '.join(redo)}", redo)
    return None


@contextlib.contextmanager
def _run_log(spec: RunSpec, ws: Workspace) -> Iterator[Callable[[str], None]]:
    """Append time-stamped lines to the run's log file."""
    with open(ws.store.log_path(spec.run_id), "a", encoding="utf-8", buffering=1) as log_file:
        def log(line: str) -> None:
            stamp = datetime.datetime.now().isoformat(timespec="seconds")
            log_file.write(f"{stamp} {line}\n")

        yield log


def _store(spec: RunSpec, ws: Workspace, record: dict[str, Any], log: Callable[[str], None]) -> Outcome:
    """Write the run's record, drop its checkpoint and tell the observers."""
    ws.store.write_record(spec.run_id, record)
    ws.store.remove_checkpoints(spec.run_id)
    log(f"finished: {record['status']}")
    try:
        ws.registry.run_finished(run_description(spec), record)
    except Exception as error:  # an observer's failure is reported, the record stays
        log(f"an observer failed: {type(error).__name__}: {error}")
    return Outcome(spec.run_id, record["status"], record.get("error"))


def perform(spec: RunSpec, ws: Workspace, checkpoint_every: int,
            report: Callable[[Progress], None] = lambda progress: None) -> Outcome:
    """Train one run unless another process holds it or it is recorded; store its record and log.

    Exceptions of the run (plugins, divergence, CUDA out of memory) become a
    ``failed`` record. ``KeyboardInterrupt`` and ``SystemExit`` pass through,
    leaving the latest checkpoint for the next attempt.
    """
    refused = _claim(spec, ws)
    if refused is not None:
        return refused
    try:
        with _run_log(spec, ws) as log:
            log(f"started on {ws.device} by process {os.getpid()}")
            return _store(spec, ws, _train_alone(spec, ws, checkpoint_every, report, log), log)
    finally:
        locks.release(ws.store.lock_path(spec.run_id))


def perform_group(specs: Sequence[RunSpec], ws: Workspace, checkpoint_every: int,
                  report: Callable[[Progress], None] = lambda progress: None) -> list[Outcome]:
    """Carry out one unit of work: a single run (:func:`perform`), or runs that train together.

    The runs of a group (of one :func:`~lthbench.lottery.execute.batch_key`) are
    locked and checked one by one as :func:`perform` does; those this
    process may train go to :func:`~lthbench.lottery.execute.execute_group`, and
    each gets its own record and log, as if it had trained alone. A group
    keeps one checkpoint for all its runs (see
    :func:`~lthbench.lottery.execute.execute_group`); the same runs grouped again
    resume from it, otherwise they start over. When the group
    raises, its runs are trained again one by one, with checkpoints, so that
    an error fails only the run that causes it (observers then hear of their
    start twice).
    """
    if len(specs) == 1:
        return [perform(specs[0], ws, checkpoint_every, report)]
    outcomes, claimed = [], []
    try:
        for spec in specs:
            refused = _claim(spec, ws)
            if refused is None:
                claimed.append(spec)
            else:
                outcomes.append(refused)
        if claimed:
            outcomes += _train_group(claimed, ws, checkpoint_every, report)
        return outcomes
    finally:
        for spec in claimed:
            locks.release(ws.store.lock_path(spec.run_id))


def _train_group(specs: list[RunSpec], ws: Workspace, checkpoint_every: int,
                 report: Callable[[Progress], None]) -> list[Outcome]:
    with contextlib.ExitStack() as stack:
        logs = [stack.enter_context(_run_log(spec, ws)) for spec in specs]

        def log_all(line: str) -> None:
            for log in logs:
                log(line)

        log_all(f"started on {ws.device} by process {os.getpid()} in a batched group of {len(specs)} runs")
        reporters = [_throttled(spec, report) for spec in specs]

        def on_progress(done: int, total: int) -> None:
            for reporter in reporters:
                reporter(done, total, None)

        try:
            for spec in specs:
                ws.registry.run_started(run_description(spec))
            records = execute_group(specs, ws, on_progress, checkpoint_every, log_all)
        except Exception as error:  # whatever failed, training alone shows which run it belongs to
            if isinstance(error, torch.cuda.OutOfMemoryError):
                _free_cuda_memory()
            for log in logs:
                log(f"batched training failed ({type(error).__name__}: {error}); training this run alone")
            records = [_train_alone(spec, ws, checkpoint_every, report, log) for spec, log in zip(specs, logs)]
        return [_store(spec, ws, record, log) for spec, record, log in zip(specs, records, logs)]
