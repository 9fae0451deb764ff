"""Per-run lock files, so that several ``lthbench run`` processes can share one output folder.

A lock is a small JSON file created atomically with ``O_CREAT | O_EXCL``; it
names its holder: host, boot id, process id and the process's start time.
A lock is stale when its holder is gone: on the same host and boot, the
process is dead or its pid now belongs to a younger process; on a previous
boot of this host, always. Locks are created, and stale ones taken over,
under a folder-wide ``flock``, so that two processes never both take the
same lock. Locks of another host are respected until their holder removes
them, unless a cluster backend can tell more (:func:`use_cluster`: a task of
:mod:`lthbench.run.cluster` names its Ray node and task in its locks, and
asks that node whether the holder still lives). Neither lock files nor the mutex are ever written
through a symbolic link (:class:`lthbench.store.StoreLinkError`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from lthbench.store import FILE_MODE, NO_SPACE, no_space, refuse_link

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def _boot_id() -> str:
    try:
        return _BOOT_ID.read_text().strip()
    except OSError:
        return ""


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), or ``""`` where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    # Field 22 of /proc/<pid>/stat (starttime), counted after the command name, which may hold spaces or ")".
    return stat.rsplit(")", 1)[1].split()[19]


#: Set by :func:`use_cluster`: more of this process's identity (its cluster node and task), and a judge of
#: whether a holder on another host lives (``None``: cannot tell).
_cluster_identity: Callable[[], dict[str, Any]] | None = None
_cluster_alive: Callable[[dict[str, Any]], bool | None] | None = None


def use_cluster(identity: Callable[[], dict[str, Any]] | None,
                alive: Callable[[dict[str, Any]], bool | None] | None) -> None:
    """Let a cluster backend add to this process's lock identity and judge holders on other hosts."""
    global _cluster_identity, _cluster_alive
    _cluster_identity, _cluster_alive = identity, alive


def holder_identity() -> dict[str, Any]:
    """What a lock file says about this process, its holder."""
    pid = os.getpid()
    extra = _cluster_identity() if _cluster_identity is not None else {}
    return {"host": socket.gethostname(), "boot": _boot_id(), "pid": pid, "started": _start_time(pid), **extra}


def read_holder(path: Path) -> dict[str, Any] | None:
    """The identity in a lock file; ``None`` when there is no lock. An unreadable lock reads as ``{}``."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return {}
    try:
        holder = json.loads(text)
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def is_alive(holder: dict[str, Any]) -> bool:
    """Whether the process named by a lock may still be running."""
    if holder.get("host") != socket.gethostname():
        # another machine: alive unless the cluster backend knows better
        verdict = _cluster_alive(holder) if _cluster_alive is not None else None
        return True if verdict is None else verdict
    return is_alive_here(holder)


def is_alive_here(holder: dict[str, Any]) -> bool:
    """Whether the process named by a lock runs on this machine, whatever host name the lock gives."""
    if holder.get("boot") != _boot_id():
        return False
    pid = holder.get("pid")
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by another user
    return holder.get("started") == _start_time(pid)


def _create(path: Path) -> bool:
    """Create the lock (``O_EXCL`` fails on any existing entry, a symbolic link too); whether this process did."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE)
    except FileExistsError:
        return False
    except OSError as error:
        if error.errno in NO_SPACE:
            raise no_space(error, path, 0) from None
        raise
    text = json.dumps(holder_identity())
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
    except OSError as error:
        path.unlink(missing_ok=True)
        if error.errno in NO_SPACE:
            raise no_space(error, path, len(text)) from None
        raise
    return True


def _open_mutex(path: Path) -> int:
    refuse_link(path)
    try:
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, FILE_MODE)
    except OSError as error:
        if error.errno == errno.ELOOP:
            refuse_link(path)
        if error.errno in NO_SPACE:
            raise no_space(error, path, 0) from None
        raise


@contextlib.contextmanager
def _takeover_mutex(folder: Path) -> Iterator[None]:
    # flock is released by the kernel when its holder dies, so this can never go stale.
    with os.fdopen(_open_mutex(folder / ".lock-takeover"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_if_stale(path: Path) -> bool:
    """Under the takeover mutex: delete the lock unless a live process holds it; whether it is gone."""
    holder = read_holder(path)
    if holder and is_alive(holder):
        return False
    path.unlink(missing_ok=True)
    return True


def acquire(path: Path) -> bool:
    """Take the lock at ``path`` for this process; ``False`` if a live process holds it.

    Creating a lock and taking over a stale one both happen under the
    folder-wide mutex, so no process ever reads a lock that another is still
    writing: an empty or unparsable lock is one whose writer died while
    writing it, and is stale.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with _takeover_mutex(path.parent.parent):
        return _create(path) or (_remove_if_stale(path) and _create(path))


def clear_stale(path: Path) -> bool:
    """Remove the lock at ``path`` if its holder is gone; whether no live process holds it now."""
    if read_holder(path) is None:
        return True
    with _takeover_mutex(path.parent.parent):
        return _remove_if_stale(path)


def release(path: Path) -> None:
    """Remove the lock at ``path`` if this process holds it."""
    holder = read_holder(path)
    if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        path.unlink(missing_ok=True)


def held_by_other(path: Path) -> bool:
    """Whether a live process other than this one holds the lock at ``path``."""
    holder = read_holder(path)
    if not holder:
        return False
    mine = holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname()
    return not mine and is_alive(holder)


def release_if(path: Path, gone: Callable[[dict[str, Any]], bool]) -> bool:
    """Remove the lock at ``path`` if ``gone`` says its holder has ended; whether it did."""
    if read_holder(path) is None:
        return False
    with _takeover_mutex(path.parent.parent):
        holder = read_holder(path)
        if holder is None or not gone(holder):
            return False
        path.unlink(missing_ok=True)
        return True
