"""Runs on a Ray cluster: every group the scheduler submits becomes one Ray task, on any node.

The scheduler stays in the driver (this process): it submits a group when
its dependencies are recorded, exactly as for local workers. A task calls
:func:`lthbench.run.worker.perform_group` in a Ray worker process, which
locks, trains and writes the records into the output folder; that folder
must therefore be the same path on every node (a shared file system), which
:class:`RayExecutor` checks on every node before it schedules anything.

Each task declares :data:`CPUS_PER_TASK` CPUs and trains on as many torch
threads; on GPUs it also declares ``gpus_per_task`` (a fraction, so that
small networks share a GPU). A worker process that dies is Ray's to retry
(``max_retries``): the retry takes over the dead worker's lock and resumes
from the run's checkpoint. Progress reports travel through a Ray queue.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lthbench.errors import UserError
from lthbench.lottery.workspace import Workspace
from lthbench.registry import Registry, default_registry
from lthbench.run import locks
from lthbench.run.executor import Group, ProgressCallback
from lthbench.run.worker import Outcome, Progress, perform_group
from lthbench.store import Store

#: The sentence ``--executor ray`` prints when Ray is not installed.
RAY_MISSING = "--executor ray needs Ray, which is not installed; install it with: pip install 'lthbench[ray]'"
#: CPUs each task declares to Ray, and the torch threads it trains on.
CPUS_PER_TASK = 1
#: How often Ray runs a task again whose worker process or node died.
MAX_RETRIES = 3
#: Seconds the driver waits for cancelled tasks' worker processes to be gone before it disconnects.
CANCEL_GRACE = 10.0
#: Seconds between two looks at the progress queue while waiting for tasks.
_SLICE = 0.25


def import_ray() -> Any:
    """The ``ray`` module; a :class:`UserError` saying how to install it when it is missing."""
    try:
        import ray
    except ImportError:
        raise UserError(RAY_MISSING) from None
    return ray


@dataclass(frozen=True)
class TaskSettings:
    """What a Ray task needs to build its workspace on whichever node runs it (picklable)."""

    output: str
    data_root: Path
    download: bool
    checkpoint_every: int
    on_gpu: bool
    registry_factory: Any = default_registry


#: Workspaces built by this worker process, reused by its later tasks (building the registry loads every plugin).
_workspaces: dict[TaskSettings, Workspace] = {}


def _workspace(settings: TaskSettings) -> Workspace:
    if settings not in _workspaces:
        device = torch.device("cuda", 0) if settings.on_gpu else torch.device("cpu")  # Ray sets CUDA_VISIBLE_DEVICES
        registry: Registry = settings.registry_factory()
        _workspaces[settings] = Workspace(registry, Store(settings.output), settings.data_root, settings.download,
                                          device)
    return _workspaces[settings]


def perform_task(group: Group, settings: TaskSettings, progress: Any) -> list[Outcome]:
    """The body of a Ray task: note the node in each run's log, then :func:`perform_group` on its runs.

    ``progress`` is the driver's :class:`ray.util.queue.Queue`; a report that
    cannot be delivered (the driver is gone) is dropped: progress is for display only.
    """
    import ray

    torch.set_num_threads(CPUS_PER_TASK)
    ws = _workspace(settings)
    context = ray.get_runtime_context()
    stamp = datetime.datetime.now().isoformat(timespec="seconds")
    line = f"{stamp} Ray task on node {context.get_node_id()} (host {socket.gethostname()})\n"
    for spec in group:
        path = ws.store.log_path(spec.run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as log:
            log.write(line)

    def report(update: Progress) -> None:
        try:
            progress.put_nowait(update)
        except Exception:  # a full or vanished queue costs a progress bar update, never the run
            pass

    return perform_group(group, ws, settings.checkpoint_every, report)


def _clear_stale(paths: list[str]) -> None:
    """On the node whose processes took these locks: remove those whose holder is gone."""
    for path in paths:
        locks.clear_stale(Path(path))


def _sees_folder(folder: str, token: str) -> tuple[str, bool]:
    """On one node: its host name, and whether ``folder`` holds ``token`` and is writable there."""
    path = Path(folder)
    return socket.gethostname(), (path / token).is_file() and os.access(path, os.W_OK)


def _check_reachable(address: str) -> None:
    """Refuse a ``HOST:PORT`` address where nothing listens (Ray itself would retry for minutes)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or "://" in address:
        return  # auto, empty, or a ray:// client address: Ray resolves those
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as error:
        raise UserError(f"--ray-address {address}: no Ray cluster answers there ({error.strerror or error}); "
                        "start one with: ray start --head") from None


class RayExecutor:
    """Runs groups as Ray tasks on a cluster that shares the output folder.

    ``address`` is a cluster's ``HOST:PORT``, ``auto`` (the cluster this
    machine belongs to), or empty: a Ray local to this machine is started.
    ``device`` is ``cpu``, ``cuda`` or ``auto`` (GPUs when the cluster has
    any); on GPUs ``jobs_per_device`` tasks share each GPU. ``output`` is
    made absolute: it must be the same path on every node.
    """

    def __init__(self, output: str, data_root: Path, download: bool, checkpoint_every: int, address: str,
                 device: str = "cpu", jobs_per_device: int = 1, registry_factory: Any = default_registry):
        ray = import_ray()
        from ray.util.queue import Queue

        self._ray = ray
        _check_reachable(address)
        try:
            ray.init(address=address or None, logging_level=logging.WARNING, log_to_driver=False,
                     configure_logging=False)
        except (ConnectionError, ValueError, RuntimeError) as error:
            where = f"at {address}" if address else "on this machine"
            raise UserError(f"cannot connect to a Ray cluster {where}: {error}") from None
        output = os.path.abspath(output)
        try:
            self._check_shared_folder(output)
            self._clear_stale_locks(sorted(Path(output).glob("runs/*/lock")))
            resources = ray.cluster_resources()
            self.on_gpu = device.startswith("cuda") or (device == "auto" and resources.get("GPU", 0) > 0)
            gpus_per_task = 1.0 / jobs_per_device if self.on_gpu else 0.0
            capacity = int(resources.get("CPU", 0) // CPUS_PER_TASK)
            if self.on_gpu:
                if not resources.get("GPU"):
                    raise UserError(f"benchmark.device = {device!r} but the Ray cluster has no GPU")
                capacity = min(capacity, int(resources["GPU"] / gpus_per_task))
            if capacity < 1:
                raise UserError(f"the Ray cluster has no node with {CPUS_PER_TASK} CPU to run a task on")
            self.capacity = capacity
            self._progress = Queue(actor_options={"num_cpus": 0})
        except BaseException:
            ray.shutdown()
            raise
        self._task = ray.remote(perform_task).options(num_cpus=CPUS_PER_TASK, num_gpus=gpus_per_task,
                                                      max_retries=MAX_RETRIES, retry_exceptions=False)
        self._settings = TaskSettings(output, data_root, download, checkpoint_every, self.on_gpu, registry_factory)
        self._store = Store(output)
        self._in_flight: dict[Any, Group] = {}

    def _check_shared_folder(self, output: str) -> None:
        """Refuse a cluster where a node that can run tasks does not see the output folder."""
        ray = self._ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        token = f".ray-check-{uuid.uuid4().hex}"
        marker = Path(output) / token
        marker.write_text("")
        try:
            nodes = [node for node in ray.nodes() if node["Alive"] and node["Resources"].get("CPU", 0) > 0]
            probe = ray.remote(_sees_folder)
            answers = ray.get([probe.options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
                node["NodeID"], soft=False)).remote(output, token) for node in nodes])
        finally:
            marker.unlink(missing_ok=True)
        blind = sorted({host for host, sees in answers if not sees})
        if blind:
            raise UserError(f"the output folder {output} is not writable at the same path on Ray "
                            f"node(s) {', '.join(blind)}; put it on a file system every node mounts (NFS, Lustre, "
                            "a mounted bucket)")

    def _clear_stale_locks(self, paths: list[Path]) -> None:
        """Remove the locks among ``paths`` whose holder is gone, each judged on its holder's host.

        A lock names its holder's host, and only that host can tell whether
        the holder still runs; a worker killed on one node would otherwise
        keep its runs locked for every other node.
        """
        ray = self._ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        by_host: dict[str, list[str]] = {}
        for path in paths:
            holder = locks.read_holder(path)
            if holder is not None:
                by_host.setdefault(str(holder.get("host")), []).append(str(path))
        nodes = {node["NodeManagerHostname"]: node["NodeID"] for node in ray.nodes() if node["Alive"]}
        clear = ray.remote(_clear_stale)
        pending = []
        for host, held in by_host.items():
            if host in nodes and host != socket.gethostname():
                pending.append(clear.options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
                    nodes[host], soft=False)).remote(held))
            else:  # this host's; another host's, without a live Ray node to ask there, stay (locks.is_alive)
                _clear_stale(held)
        ray.get(pending)

    def submit(self, group: Group) -> None:
        """Start ``group`` as a Ray task."""
        self._in_flight[self._task.remote(group, self._settings, self._progress)] = group

    def wait(self, timeout: float, on_progress: ProgressCallback) -> list[Outcome]:
        """Outcomes of the tasks that ended within ``timeout`` seconds; progress reports go to ``on_progress``."""
        ray = self._ray
        deadline = time.monotonic() + timeout
        ended: list[Any] = []
        while True:
            left = deadline - time.monotonic()
            if self._in_flight:
                ended, _ = ray.wait(list(self._in_flight), num_returns=len(self._in_flight),
                                    timeout=max(0.0, min(_SLICE, left)), fetch_local=False)
            else:
                time.sleep(max(0.0, min(_SLICE, left)))
            self._drain_progress(on_progress)
            if ended or left <= _SLICE:
                break
        outcomes = []
        for ref in ended:
            outcomes += self._outcomes(ref, self._in_flight.pop(ref))
        busy = [self._store.lock_path(o.run_id) for o in outcomes if o.status == "busy"]
        if busy:  # a lock of a dead worker on another node: cleared, the scheduler submits the run again
            self._clear_stale_locks(busy)
        return outcomes

    def _drain_progress(self, on_progress: ProgressCallback) -> None:
        waiting = self._progress.qsize()
        for update in self._progress.get_nowait_batch(waiting) if waiting else []:
            on_progress(update)

    def _outcomes(self, ref: Any, group: Group) -> list[Outcome]:
        """What a finished task returned; a task that Ray gave up on leaves its runs ``crashed``."""
        ray = self._ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayError as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            message = f"the Ray task of this run ended without a record ({type(error).__name__}: {reason})"
            return [Outcome(spec.run_id, "crashed", message) for spec in group]

    def shutdown(self) -> None:
        """Cancel tasks in flight and disconnect.

        Cancelling kills the tasks' worker processes (Ray does not reliably
        interrupt a running task otherwise); their checkpoints, written
        atomically, stay, and their locks are stale for the next run.
        """
        ray = self._ray
        for ref in self._in_flight:
            ray.cancel(ref, force=True)
        if self._in_flight:
            ray.wait(list(self._in_flight), num_returns=len(self._in_flight), timeout=CANCEL_GRACE,
                     fetch_local=False)
        self._in_flight.clear()
        self._progress.shutdown()
        ray.shutdown()

