"""The result store: one folder per training run, named by a content hash, written atomically.

Layout of an output folder::

    matrix.json                 the expanded matrix: cells and the runs of each chain
    runs/<run_id>/record.json   one record per finished (or failed) training run
    runs/<run_id>/*.pt          tensors the run produced: θ₀, θ_k, its mask, its trained weights
    runs/<run_id>/checkpoint.pt training state of an unfinished run (removed with the record's writing)
    runs/<run_id>/group-<h>.pt  training state of unfinished runs that train together, this one first
    runs/<run_id>/lock          the process working on the run (see lthbench.run.locks)
    runs/<run_id>/log.txt       the run's evaluation lines, one per evaluation

A run is done exactly when its ``record.json`` exists and parses; its keys
are those of :class:`Record`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypedDict

import torch

from lthbench.run.status import RECORDED, RunStatus


class Record(TypedDict):
    """A run's ``record.json``: what the run is, how it ended, and what it measured (``None`` where nothing was)."""

    schema: int
    run_id: str
    cell_id: str
    experiment: str
    architecture: str
    dataset: str
    pruner: str
    #: ``dense`` for round 0.
    initializer: str
    seed: int
    round: int
    mode: str
    depends_on: list[str]
    training: dict[str, Any]
    #: ``done``, ``diverged`` or ``failed``.
    status: str
    #: Fraction of the prunable weights kept.
    weights_remaining: float | None
    #: Per prunable layer: ``{"remaining": kept, "total": size}``.
    layers: dict[str, dict[str, int]]
    #: Lists ``iteration``, ``train_loss``, ``val_loss``, ``val_accuracy``, ``test_accuracy``.
    curves: dict[str, list[float]]
    early_stop_iteration: int | None
    early_stop_test_accuracy: float | None
    early_stop_val_loss: float | None
    final_test_accuracy: float | None
    start_iteration: int | None
    iterations: int | None
    wall_time: float | None
    device: str | None
    versions: dict[str, str] | None
    error: str | None
    traceback: str | None


def content_hash(key: Any) -> str:
    """A stable 16-hex-digit hash of a JSON-serialisable description."""
    text = json.dumps(key, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block is done, then deliver them.

    ``torch.save`` and ``torch.load`` call back into Python to write and
    read; an exception raised there by a signal handler (Ctrl-C's
    ``KeyboardInterrupt``, a worker's ``SystemExit`` on SIGTERM) comes out of
    torch as a ``RuntimeError``, which would record an interrupted run as
    failed, or discard a good checkpoint as unreadable. Signals can only be
    held in the main thread; elsewhere the block runs as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {number: signal.signal(number, lambda number, frame: received.append(number)) for number in held}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        for number in dict.fromkeys(received):
            signal.raise_signal(number)


def _atomic_write(path: Path, write: Any) -> None:
    """Write through a temporary file in the same folder, fsync, then rename over ``path`` (signals held)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with signals_held():
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _load(path: Path) -> Any:
    with signals_held():
        return torch.load(path, map_location="cpu", weights_only=True)


def write_json(path: Path, data: Any) -> None:
    """Atomically write ``data`` as indented JSON."""
    payload = json.dumps(data, indent=1, sort_keys=True, default=str).encode()
    _atomic_write(path, lambda handle: handle.write(payload))


def read_json(path: Path) -> Any | None:
    """Read a JSON file; ``None`` if it is missing or corrupt (a crash can leave either)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Atomically save a dict of tensors (moved to the CPU)."""
    cpu = {name: t.detach().cpu() for name, t in tensors.items()}
    _atomic_write(path, lambda handle: torch.save(cpu, handle))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Load tensors saved by :func:`save_tensors`, safely (``weights_only``)."""
    return _load(path)


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Atomically save nested dicts and lists of tensors and plain values (a training state)."""
    _atomic_write(path, lambda handle: torch.save(state, handle))


def load_state(path: Path) -> dict[str, Any]:
    """Load what :func:`save_state` saved, safely (``weights_only``), tensors on the CPU."""
    return _load(path)


def readable(path: Path) -> bool:
    """Whether a tensor file loads (a crash or a full disk can leave a truncated one)."""
    try:
        _load(path)
    except Exception:  # torch raises several types for truncated or garbled files
        return False
    return True


class Store:
    """An output folder of run records and tensors."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def run_dir(self, run_id: str) -> Path:
        """The folder of one run."""
        return self.root / "runs" / run_id

    def record(self, run_id: str) -> dict[str, Any] | None:
        """The stored record of a run, or ``None`` if it has none (or a corrupt one)."""
        record = read_json(self.run_dir(run_id) / "record.json")
        return record if isinstance(record, dict) and record.get("run_id") == run_id else None

    def status(self, run_id: str) -> RunStatus | None:
        """The status of a run's record (``done``, ``diverged`` or ``failed``); ``None`` if it has no record."""
        record = self.record(run_id)
        status = record.get("status") if record is not None else None
        return RunStatus(status) if isinstance(status, str) and status in RECORDED else None

    def write_record(self, run_id: str, record: dict[str, Any]) -> None:
        """Store a run's record atomically; from then on the run counts as finished."""
        write_json(self.run_dir(run_id) / "record.json", record)

    def delete_record(self, run_id: str) -> None:
        """Forget a run's result, so that it runs again."""
        (self.run_dir(run_id) / "record.json").unlink(missing_ok=True)

    def unreadable_tensors(self, run_id: str) -> list[Path]:
        """The tensor files of a run that do not load (checkpoints aside)."""
        return [p for p in sorted(self.run_dir(run_id).glob("*.pt")) if p != self.checkpoint_path(run_id)
                and not p.name.startswith("group-") and not readable(p)]

    def remove_temporary_files(self, run_id: str) -> None:
        """Delete half-written temporary files a crashed writer left in a run's folder."""
        for path in self.run_dir(run_id).glob(".*.tmp"):
            path.unlink(missing_ok=True)

    def remove_leftovers(self, run_id: str) -> None:
        """Delete what a process killed after writing the run's record left behind: checkpoint, temporaries.

        Only for a recorded run whose lock no live process holds.
        """
        self.remove_checkpoints(run_id)
        self.remove_temporary_files(run_id)

    def checkpoint_path(self, run_id: str) -> Path:
        """Where an unfinished run keeps its training state."""
        return self.run_dir(run_id) / "checkpoint.pt"

    def group_checkpoint_path(self, run_ids: list[str]) -> Path:
        """Where runs that train together keep their state: in the first run's folder, named by all of them."""
        return self.run_dir(run_ids[0]) / f"group-{content_hash(run_ids)}.pt"

    def remove_checkpoints(self, run_id: str) -> None:
        """Delete a run's checkpoint and the group checkpoints kept in its folder (the run is recorded)."""
        self.checkpoint_path(run_id).unlink(missing_ok=True)
        for path in self.run_dir(run_id).glob("group-*.pt"):
            path.unlink(missing_ok=True)

    def lock_path(self, run_id: str) -> Path:
        """The lock file of a run being worked on."""
        return self.run_dir(run_id) / "lock"

    def log_path(self, run_id: str) -> Path:
        """The run's log of evaluation lines."""
        return self.run_dir(run_id) / "log.txt"

    def tensors_path(self, run_id: str, name: str) -> Path:
        """Where a run keeps one of its tensor files (``name`` without suffix)."""
        return self.run_dir(run_id) / f"{name}.pt"

    def matrix(self) -> dict[str, Any] | None:
        """The stored matrix description, if any."""
        return read_json(self.root / "matrix.json")

    def write_matrix(self, matrix: dict[str, Any]) -> None:
        """Store the matrix description atomically."""
        write_json(self.root / "matrix.json", matrix)
