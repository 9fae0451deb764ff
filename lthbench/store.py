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
are those of :class:`Record`. A reader checks a record's values with
:func:`record_problem` before it uses them.

lthbench never follows a symbolic link inside an output folder: ``runs/``
and the run folders must be folders, and files are replaced (atomic writes)
or opened without following links, so that no write lands outside the store
(:class:`StoreLinkError`). A write the file system refuses for lack of space
stops the matrix with :class:`StoreFullError`, which no run's record holds.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import math
import os
import secrets
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypedDict

import torch

from lthbench.errors import UserError
from lthbench.run.status import RECORDED, RunStatus

#: ``errno`` values of a write that failed for lack of space: a full disk, a quota, a file-size limit.
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
#: The mode files of the store are created with, before the user's umask is applied (as ``open`` does).
FILE_MODE = 0o666


class StoreError(UserError):
    """The output folder cannot be written as lthbench needs; no run is to blame, so none is recorded failed."""


class StoreFullError(StoreError):
    """A write in the output folder failed for lack of space."""


class StoreLinkError(StoreError):
    """A path inside the output folder is a symbolic link, which lthbench does not follow."""


def no_space(error: OSError, path: Path, needed: int) -> StoreFullError:
    """The one-sentence error of a write of ``needed`` bytes to ``path`` that failed for lack of space."""
    return StoreFullError(
        f"cannot write {path.name} in {path.parent}: {error.strerror or os.strerror(error.errno)}; it needs "
        f"{_size(needed)} of free space there; free some and rerun the same command (finished runs are kept)"
    )


def _size(count: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


def refuse_link(path: Path) -> None:
    """Raise :class:`StoreLinkError` if ``path`` is a symbolic link."""
    if path.is_symlink():
        raise StoreLinkError(
            f"{path} is a symbolic link; lthbench does not follow links inside its output folder: "
            "replace it by what it points to, or delete it"
        )


def open_append(path: Path) -> io.TextIOWrapper:
    """Open a text file of the store for appending lines, creating it; never through a symbolic link."""
    refuse_link(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, FILE_MODE)
    except OSError as error:
        if error.errno == errno.ELOOP:
            refuse_link(path)
        if error.errno in NO_SPACE:
            raise no_space(error, path, 1) from None
        raise
    return open(fd, "a", encoding="utf-8", buffering=1)


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


#: Curves whose values are losses: a diverged run records non-finite ones.
LOSS_CURVES = frozenset({"train_loss", "val_loss"})
#: Fields a ``done`` record measured: none of them may be missing.
MEASURED = ("weights_remaining", "early_stop_iteration", "early_stop_test_accuracy", "final_test_accuracy",
            "iterations")


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_fraction(value: Any) -> bool:
    return _is_number(value) and math.isfinite(value) and 0 <= value <= 1


def _field_problem(record: dict[str, Any]) -> str | None:
    """The first scalar field of ``record`` whose value has the wrong type or range, in words."""
    checks = {
        "status": lambda v: isinstance(v, str) and v in RECORDED,
        "seed": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "round": _is_count,
        "weights_remaining": _is_fraction,
        "early_stop_iteration": _is_count,
        "start_iteration": _is_count,
        "iterations": _is_count,
        "early_stop_test_accuracy": _is_fraction,
        "final_test_accuracy": _is_fraction,
        "early_stop_val_loss": _is_number,
        "wall_time": lambda v: _is_number(v) and math.isfinite(v) and v >= 0,
        "device": lambda v: isinstance(v, str),
        "error": lambda v: isinstance(v, str),
        "traceback": lambda v: isinstance(v, str),
    }
    for name, check in checks.items():
        value = record.get(name)
        if value is None and name not in ("status", "seed", "round"):
            continue
        if not check(value):
            return f"{name} = {value!r:.60} is not a valid value"
    if record["status"] == RunStatus.DONE:
        missing = [name for name in MEASURED if record.get(name) is None]
        if missing:
            return f"a done run without {', '.join(missing)}"
    return None


def _layers_problem(layers: Any) -> str | None:
    if not isinstance(layers, dict):
        return "layers is not a table"
    for name, counts in layers.items():
        if not (isinstance(counts, dict) and _is_count(counts.get("remaining")) and _is_count(counts.get("total"))
                and counts["remaining"] <= counts["total"]):
            return f"layers[{name!r:.60}] is not a count of remaining and total weights"
    return None


def _curves_problem(curves: Any) -> str | None:
    if not isinstance(curves, dict) or not all(isinstance(values, list) for values in curves.values()):
        return "curves is not a table of lists"
    if len({len(values) for values in curves.values()}) > 1:
        return "curves of different lengths"
    for name, values in curves.items():
        valid = _is_count if name == "iteration" else _is_number if name in LOSS_CURVES else _is_fraction
        if not all(valid(value) for value in values):
            return f"curves[{name!r:.60}] holds a value that is not valid"
    return None


def record_problem(record: Any) -> str | None:
    """What makes a stored record unusable (a wrong type, a non-finite or out-of-range value, ragged curves), or ``None``.

    Accuracies and fractions are finite and within [0, 1], counts are
    non-negative integers, loss curves may hold non-finite values (a diverged
    run's), every curve has one value per evaluation, and a ``done`` record
    holds every measured field (:data:`MEASURED`).
    """
    if not isinstance(record, dict):
        return "not a JSON object"
    return _field_problem(record) or _layers_problem(record.get("layers", {})) or _curves_problem(
        record.get("curves", {}))


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
    """Write through a temporary file in the same folder, fsync, then rename over ``path`` (signals held).

    The rename replaces a symbolic link at ``path`` rather than writing
    where it points. A write refused for lack of space raises
    :class:`StoreFullError` and leaves no temporary file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with signals_held():
        written = 0
        try:
            fd, tmp = _create_temporary(path)
        except OSError as error:
            if error.errno in NO_SPACE:
                raise no_space(error, path, 0) from None
            raise
        try:
            with os.fdopen(fd, "wb") as handle:
                write(handle)
                written = handle.tell()
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except OSError as error:
            Path(tmp).unlink(missing_ok=True)
            if error.errno in NO_SPACE:
                raise no_space(error, path, max(written, _pending(write))) from None
            raise
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _create_temporary(path: Path) -> tuple[int, str]:
    """A new temporary file beside ``path``, created with the mode the user's umask gives (``mkstemp`` gives 0600).

    Results are often shared in a group's folder: their files get the same
    permissions as any other file the user creates.
    """
    while True:
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE), tmp
        except FileExistsError:
            continue


def _pending(write: Any) -> int:
    """The size of what ``write`` writes, where it says (:class:`_Payload`)."""
    return len(write.payload) if isinstance(write, _Payload) else 0


class _Payload:
    """A write of bytes known in advance (so that a failed write can tell the space it needed)."""

    def __init__(self, payload: bytes):
        self.payload = payload

    def __call__(self, handle: Any) -> None:
        handle.write(self.payload)


def _serialised(data: Any) -> _Payload:
    """``torch.save`` into memory first: torch reports a failed write to a file only as a garbled position."""
    buffer = io.BytesIO()
    with signals_held():
        torch.save(data, buffer)
    return _Payload(buffer.getvalue())


def _load(path: Path) -> Any:
    with signals_held():
        return torch.load(path, map_location="cpu", weights_only=True)


def write_json(path: Path, data: Any) -> None:
    """Atomically write ``data`` as indented JSON."""
    _atomic_write(path, _Payload(json.dumps(data, indent=1, sort_keys=True, default=str).encode()))


def read_json(path: Path) -> Any | None:
    """Read a JSON file; ``None`` if it is missing or corrupt (a crash can leave either)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Atomically save a dict of tensors (moved to the CPU)."""
    cpu = {name: t.detach().cpu() for name, t in tensors.items()}
    _atomic_write(path, _serialised(cpu))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Load tensors saved by :func:`save_tensors`, safely (``weights_only``)."""
    return _load(path)


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Atomically save nested dicts and lists of tensors and plain values (a training state)."""
    _atomic_write(path, _serialised(state))


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
        """The folder of one run; :class:`StoreLinkError` if it, or ``runs/``, is a symbolic link."""
        runs = self.root / "runs"
        path = runs / run_id
        refuse_link(runs)
        refuse_link(path)
        return path

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

    def open_log(self, run_id: str) -> io.TextIOWrapper:
        """The run's log, opened for appending lines (never through a symbolic link)."""
        self.run_dir(run_id).mkdir(parents=True, exist_ok=True)
        return open_append(self.log_path(run_id))

    def tensors_path(self, run_id: str, name: str) -> Path:
        """Where a run keeps one of its tensor files (``name`` without suffix)."""
        return self.run_dir(run_id) / f"{name}.pt"

    def matrix(self) -> dict[str, Any] | None:
        """The stored matrix description, if any."""
        return read_json(self.root / "matrix.json")

    def write_matrix(self, matrix: dict[str, Any]) -> None:
        """Store the matrix description atomically."""
        write_json(self.root / "matrix.json", matrix)
