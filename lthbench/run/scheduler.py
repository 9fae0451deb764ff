"""Schedule a benchmark's runs by their dependencies, skipping what the store already holds.

A run is submitted to the executor as soon as the records of the runs it
depends on say ``done``; a run whose dependency failed, diverged or is
blocked is ``blocked``. Independent chains therefore proceed in parallel, and
a dense run shared by several cells runs once. Runs that another live
process holds (its lock) are waited for, not duplicated.

With batching on (``batch_trials`` above 1), ready runs that can train
together (the controls of one level, the seeds of one cell: see
:func:`lthbench.lottery.execute.batch_key`) are submitted as one group, and lower
rounds run first, so that the chains of a cell reach each round together.
"""

from __future__ import annotations

import datetime
import socket
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console

from lthbench.config.settings import Benchmark, training_key
from lthbench.errors import DataNotFound
from lthbench.lottery.execute import batch_key
from lthbench.lottery.record import failure_record
from lthbench.lottery.workspace import Workspace, device_label, library_versions
from lthbench.registry import Registry
from lthbench.run import locks
from lthbench.run.executor import Executor, Group, InProcessExecutor
from lthbench.run.plan import (SCHEMA, RunSpec, cell_fields, cell_runs, iterations_per_epoch, runs_to_train,
                               start_iteration, training_length)
from lthbench.run.progress import Display, describe, make_display
from lthbench.run.status import FAILURES, RECORDED, RunStatus, derive_statuses
from lthbench.run.worker import Outcome
from lthbench.store import Store, load_state

#: Default ``--checkpoint-every``: iterations between two checkpoints of a run.
CHECKPOINT_EVERY = 1000
#: Seconds between two looks at runs that another process is training.
POLL_SECONDS = 1.0


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def git_commit(path: Path) -> str | None:
    """The git commit of the folder holding the benchmark file, if it is in a repository."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def invocation(benchmark: Benchmark, command: list[str] | None) -> dict[str, Any]:
    """One entry of ``matrix.json``'s ``history``: when, with which code and libraries, how and where it ran."""
    return {"started": _now(), "finished": None, "git_commit": git_commit(Path(benchmark.source).resolve().parent),
            "versions": library_versions(), "argv": command, "host": socket.gethostname()}


def with_history(matrix: dict[str, Any], previous: Any, entry: dict[str, Any]) -> dict[str, Any]:
    """``matrix`` as this invocation writes it over the stored ``previous`` one (``None``, or an older layout).

    ``started`` stays the first invocation's and ``history`` lists every
    invocation, this one last; a ``matrix.json`` written before the history
    existed gives its own start, finish, commit and versions as the first
    entry (without a command line or host, which it did not keep).
    """
    history: list[dict[str, Any]] = []
    if isinstance(previous, dict):
        history = [h for h in previous.get("history") or [] if isinstance(h, dict)]
        if not history and previous.get("started"):
            history = [{"started": previous.get("started"), "finished": previous.get("finished"),
                        "git_commit": previous.get("git_commit"), "versions": previous.get("versions"),
                        "argv": None, "host": None}]
    history.append(entry)
    return {**matrix, "started": history[0]["started"], "finished": matrix.get("finished"), "history": history}


def matrix_description(benchmark: Benchmark, ws: Workspace) -> dict[str, Any]:
    """The ``matrix.json`` content: settings, cells and the runs of every cell with their dependencies."""
    runs = cell_runs(benchmark)
    cells = {}
    for run in runs:
        cell = run.cell
        cells.setdefault(run.cell_id, {
            "cell_id": run.cell_id,
            **cell_fields(cell),
            "initializers": [ref.label for ref in cell.initializers],
            "rounds": cell.schedule.rounds,
            "rate": cell.schedule.rate,
            "output_rate": cell.schedule.output_rate,
            "mask_source": cell.mask_source,
            "training": training_key(cell.training),
            "overrides": cell.overrides,
            "label": cell.label,
            "control_of": ws.registry.pruner(cell.pruner.name).mimics(cell.pruner.params),
        })
    return {
        "schema": SCHEMA,
        "benchmark": {"name": benchmark.name, "seeds": list(benchmark.seeds), "source": benchmark.source,
                      "device": device_label(ws.device)},
        "config": benchmark.raw,
        "versions": library_versions(),
        "git_commit": git_commit(Path(benchmark.source).resolve().parent),
        "started": _now(),
        "finished": None,
        "cells": list(cells.values()),
        "runs": [{"run_id": r.run_id, "cell_id": r.cell_id, "seed": r.seed, "round": r.round,
                  "initializer": r.initializer_label, "depends_on": list(r.depends_on)} for r in runs],
    }


class WorkerDied(RuntimeError):
    """The process training a run died without recording it."""


def statuses(runs: list[RunSpec], store: Store) -> dict[str, str]:
    """The status of every run: from its record, else running (locked by a live process), blocked or pending."""
    recorded = {run.run_id: status for run in runs if (status := store.status(run.run_id))}
    derived = derive_statuses({run.run_id: run.depends_on for run in runs}, recorded,
                              running=lambda run_id: locks.held_by_other(store.lock_path(run_id)))
    return {run_id: status for run_id, (status, _) in derived.items()}


def checkpoint_iteration(store: Store, run_id: str) -> int:
    """The iteration a run's checkpoint reached (0 without a readable one)."""
    path = store.checkpoint_path(run_id)
    if not path.exists():
        return 0
    try:
        return int(load_state(path)["iteration"])
    except Exception:  # a truncated checkpoint: the run starts over
        return 0


def iterations_left(run: RunSpec, store: Store, registry: Registry) -> int | None:
    """Training iterations a run still needs, from its checkpoint if any; ``None`` where unknown.

    A run configured by epochs over a whole data set needs the data set's
    size, which only loading it tells; with ``train_subset`` it is known.
    """
    total = training_length(run.cell.training)
    if total is None:
        return None
    start = start_iteration(run, registry, iterations_per_epoch(run.cell.training))
    return max(0, total - max(checkpoint_iteration(store, run.run_id), start))


def failure_lines(runs: list[RunSpec], store: Store) -> list[str]:
    """One line per failed or diverged run: what it is and its error."""
    lines = []
    for run in runs:
        record = store.record(run.run_id)
        if record and record.get("status") in FAILURES:
            lines.append(f"{record['status']}: {describe(run)} ({run.run_id}): {record.get('error')}")
    return lines


def data_failure(record: dict[str, Any] | None) -> bool:
    """Whether a failed record holds a data set that was missing or failed to download, not a failure of its run."""
    return bool(record) and str(record.get("error") or "").startswith(f"{DataNotFound.__name__}: ")


def tidy_store(runs: list[RunSpec], store: Store, retry_failed: bool) -> None:
    """Prepare the store for a run of the matrix: forget failed runs to retry them, clear what killed trainers left.

    With ``retry_failed`` the records of failed runs are deleted, so that
    they run again. Runs that older versions recorded failed for want of
    their data (:func:`data_failure`) run again in any case: the data is
    checked before any run starts now, so such a record says nothing about
    the run. A recorded run whose lock is stale lost its trainer
    between the record and the clean-up: its lock, checkpoints and temporary
    files go.
    """
    for run in runs:
        status = store.status(run.run_id)
        if status == RunStatus.FAILED and (retry_failed or data_failure(store.record(run.run_id))):
            store.delete_record(run.run_id)
        elif status is not None and locks.clear_stale(store.lock_path(run.run_id)):
            store.remove_leftovers(run.run_id)


#: In-flight states of :class:`RunBoard`: handed to the executor, or being trained by another process.
_SUBMITTED = "submitted"
_ELSEWHERE = "elsewhere"


class RunBoard:
    """The state of every run of one matrix, as this process sees it: a status, or an in-flight state."""

    def __init__(self, runs: list[RunSpec], store: Store):
        self.alone: set[str] = set()  # runs to train alone: their batched group's worker process died
        self.runs = runs  # plan order: dependencies first
        self.store = store
        self.state: dict[str, str] = {run.run_id: store.status(run.run_id) or RunStatus.PENDING for run in runs}

    def to_do(self) -> int:
        """Runs without a record yet."""
        return sum(status not in RECORDED for status in self.state.values())

    def ready(self) -> list[RunSpec]:
        """Pending runs whose dependencies are done; marks runs behind a failure ``blocked``."""
        recorded = {run_id: status for run_id, status in self.state.items() if status in RECORDED}
        derived = derive_statuses({run.run_id: run.depends_on for run in self.runs}, recorded)
        ready = []
        for run in self.runs:
            if self.state[run.run_id] != RunStatus.PENDING:
                continue
            if derived[run.run_id][0] == RunStatus.BLOCKED:
                self.state[run.run_id] = RunStatus.BLOCKED
            elif all(self.state[dep] == RunStatus.DONE for dep in run.depends_on):
                ready.append(run)
        return ready

    def elsewhere(self) -> list[RunSpec]:
        """Runs that another process is training."""
        return [run for run in self.runs if self.state[run.run_id] == _ELSEWHERE]

    def look_elsewhere(self) -> list[tuple[RunSpec, dict[str, Any]]]:
        """Update runs trained elsewhere: recorded ones are finished, unlocked ones pending again."""
        finished = []
        for run in self.elsewhere():
            status = self.store.status(run.run_id)
            if status is not None:
                self.state[run.run_id] = status
                finished.append((run, self.store.record(run.run_id)))
            elif not locks.held_by_other(self.store.lock_path(run.run_id)):
                self.state[run.run_id] = RunStatus.PENDING
        return finished

    def counts(self) -> Counter:
        """Runs by status."""
        return Counter(self.state.values())


def _settle(board: RunBoard, run: RunSpec, outcome: Outcome, display: Display) -> None:
    """Record what an outcome means for the board."""
    store = board.store
    if outcome.status == "busy":
        board.state[run.run_id] = _ELSEWHERE
        return
    if outcome.status == "redo":
        board.state[run.run_id] = RunStatus.PENDING
        for dep in outcome.redo:
            board.state[dep] = store.status(dep) or RunStatus.PENDING
        display.add_runs(sum(board.state[dep] == RunStatus.PENDING for dep in outcome.redo))
        return
    if outcome.status == "crashed_in_group":
        board.state[run.run_id] = RunStatus.PENDING
        board.alone.add(run.run_id)
        return
    if outcome.status == "crashed":
        store.write_record(run.run_id, failure_record(run, WorkerDied(outcome.error)))
    record = store.record(run.run_id)
    board.state[run.run_id] = record["status"] if record else RunStatus.FAILED
    display.finished(run, outcome, record)


class Grouper:
    """Splits ready runs into the groups submitted to an executor: at most ``batch_trials`` runs each."""

    def __init__(self, ws: Workspace, batch_trials: int, alone: set[str] | None = None,
                 convolutions: bool = True):
        self.ws = ws
        self.batch_trials = batch_trials
        #: Whether networks holding a convolution stack too (see :func:`lthbench.lottery.execute.batch_key`).
        self.convolutions = convolutions
        self._keys: dict[str, str | None] = {}
        #: Runs to submit alone whatever their key (the board's runs whose batched group lost its worker).
        self.alone = alone if alone is not None else set()

    def _key(self, run: RunSpec) -> str | None:
        if run.round == 0:
            return None
        if run.cell_id not in self._keys:  # the same for every pruned round of a cell
            self._keys[run.cell_id] = batch_key(run, self.ws, self.convolutions)
        return self._keys[run.cell_id]

    def groups(self, ready: list[RunSpec]) -> list[Group]:
        """Runs of one batch key together, lower rounds first; every run alone when batching is off."""
        if self.batch_trials <= 1:
            return [(run,) for run in ready]
        groups: list[list[RunSpec]] = []
        open_groups: dict[str, list[RunSpec]] = {}
        for run in sorted(ready, key=lambda r: r.round):
            if run.run_id in self.alone:  # its group's worker died: it trains alone, to find which run did it
                groups.append([run])
                continue
            key = self._key(run)
            group = open_groups.get(key) if key is not None else None
            if group is None or len(group) >= self.batch_trials:
                group = []
                groups.append(group)
                if key is not None:
                    open_groups[key] = group
            group.append(run)
        return [tuple(group) for group in groups]


def _work_through(board: RunBoard, executor: Executor, grouper: Grouper, display: Display) -> None:
    """Submit groups of ready runs as capacity allows until nothing is left to run or to wait for."""
    by_id = {run.run_id: run for run in board.runs}
    in_flight: list[set[str]] = []  # the run ids of each group in flight without an outcome yet
    while True:
        blocked = board.counts()[RunStatus.BLOCKED]
        ready = board.ready()
        display.add_runs(blocked - board.counts()[RunStatus.BLOCKED])  # runs behind a failure will not run
        for group in grouper.groups(ready):
            if len(in_flight) >= executor.capacity:
                break
            for run in group:
                if locks.held_by_other(board.store.lock_path(run.run_id)):
                    board.state[run.run_id] = _ELSEWHERE
            group = tuple(run for run in group if board.state[run.run_id] != _ELSEWHERE)
            if not group:
                continue
            for run in group:
                board.state[run.run_id] = _SUBMITTED
                display.started(run)
            in_flight.append({run.run_id for run in group})
            executor.submit(group)
        if not in_flight and not board.elsewhere():
            return
        for outcome in executor.wait(POLL_SECONDS, display.progress):
            for ids in in_flight:
                ids.discard(outcome.run_id)
            _settle(board, by_id[outcome.run_id], outcome, display)
        in_flight = [ids for ids in in_flight if ids]
        for run, record in board.look_elsewhere():
            display.finished(run, Outcome(run.run_id, record["status"], record.get("error")), record)


def fetch_data(benchmark: Benchmark, ws: Workspace) -> None:
    """Make sure every data set of the matrix is there before any run starts, downloading it where allowed.

    A data set that is missing (and may not be downloaded) or whose download
    fails raises :class:`DataNotFound`, naming the benchmark file and the
    data set, with the underlying cause in full: a problem of the data is
    the user's to fix, not a failure of the runs that would read it.
    """
    from lthbench.config.parse import check_dataset

    for name in sorted({cell.dataset.name for cell in benchmark.cells}):
        dataset = ws.registry.dataset(name)
        try:
            try:
                check_dataset(dataset, ws.data_root, False)
            except DataNotFound:
                if not ws.download:
                    raise
                for train in (True, False):
                    dataset.load(ws.data_root, train, True)
        except DataNotFound as error:
            raise DataNotFound(f"{benchmark.source}: dataset {name!r}: {error}") from None


def run_matrix(benchmark: Benchmark, ws: Workspace, retry_failed: bool = False, console: Console | None = None,
               executor: Executor | None = None, checkpoint_every: int = CHECKPOINT_EVERY,
               batch_trials: int = 1, command: list[str] | None = None, stack_convolutions: bool = True) -> Counter:
    """Run every run of the matrix that the store does not hold yet; return a count by status.

    ``executor`` defaults to training in this process on ``ws.device``, with
    a checkpoint every ``checkpoint_every`` iterations. Up to
    ``batch_trials`` runs that can train together are submitted as one group
    (1: every run alone); with ``stack_convolutions`` false, runs of networks
    holding a convolution are submitted alone. A run whose plugin raises is recorded as failed
    with its traceback, and the runs that depend on it are blocked; every
    other chain goes on. ``retry_failed`` runs the failed runs again.
    Every data set is checked (and downloaded where allowed) first
    (:func:`fetch_data`). ``matrix.json`` keeps the first start of the
    matrix and gets this invocation (its ``command`` line) appended to its
    ``history``; ``finished`` is the end of the last one. On
    ``KeyboardInterrupt`` the workers stop, finished records and the latest
    checkpoints stay, and the interrupt propagates.
    """
    console = console or Console()
    executor = executor or InProcessExecutor(ws, checkpoint_every)
    runs = runs_to_train(benchmark)
    fetch_data(benchmark, ws)
    entry = invocation(benchmark, command)
    matrix = with_history(matrix_description(benchmark, ws), ws.store.matrix(), entry)
    ws.store.write_matrix(matrix)
    tidy_store(runs, ws.store, retry_failed)
    board = RunBoard(runs, ws.store)
    display = make_display(console)
    display.add_runs(board.to_do())
    try:
        _work_through(board, executor, Grouper(ws, batch_trials, board.alone, stack_convolutions), display)
    finally:
        executor.shutdown()
        display.close()
    matrix["finished"] = entry["finished"] = _now()
    ws.store.write_matrix(matrix)
    records = [r for r in (ws.store.record(run.run_id) for run in runs) if r]
    ws.registry.matrix_finished(ws.store.root, records)
    return board.counts()
