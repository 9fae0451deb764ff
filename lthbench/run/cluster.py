"""Runs as tasks on a Ray cluster: the same scheduler, the same records, more machines.

:class:`RayExecutor` is an :class:`lthbench.run.executor.Executor`. The
scheduler keeps every decision it makes on one machine (which runs are
ready, which are stored, which train together); each group it submits
becomes one Ray task that declares its resources (``num_cpus`` = its torch
threads; on GPUs a share of one, so that several small networks train on one
device) and calls :func:`lthbench.run.worker.perform_group` on whatever node
Ray places it. Workers read and write the output folder directly, with the
same locks and atomic writes as on one machine, so the folder must be the
same folder on every node (a shared file system): :meth:`RayExecutor.check_shared`
proves that before anything is scheduled.

Faults: a task whose worker process or node dies is retried by Ray; the
retry takes over the lock of its earlier attempt (its lock names the Ray
task) and resumes from the run's checkpoint. Locks held by processes of
other nodes are judged by asking that node (:func:`_holder_alive`), so a run
whose trainer died elsewhere is not waited for forever. Ctrl-C cancels the
outstanding tasks, which keeps their checkpoints.

Ray is an optional dependency (``pip install 'lthbench[ray]'``): it is
imported only when a Ray executor is made.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lthbench.data_root import CACHE_ENV
from lthbench.errors import UserError
from lthbench.registry import DISABLE_AUTOLOAD_ENV, PLUGINS_ENV
from lthbench.run import locks
from lthbench.run.executor import Group, ProgressCallback
from lthbench.run.pool import WorkerSettings, build_workspace
from lthbench.run.worker import Outcome, perform_group
from lthbench.store import Store, StoreError

#: Environment variables the driver passes to every Ray worker (the local plugins, the cache folder).
FORWARDED_ENV = (PLUGINS_ENV, DISABLE_AUTOLOAD_ENV, CACHE_ENV)
#: Seconds a verdict on a lock holder of another node is trusted before that node is asked again.
HOLDER_CHECK_SECONDS = 5.0
#: How often Ray runs a task again after its worker process or node died.
TASK_RETRIES = 3


def import_ray() -> Any:
    """The ``ray`` module, or one clear error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray, which is not installed here; install it with "
                        "pip install 'lthbench[ray]'") from None
    return ray


@dataclass(frozen=True)
class TaskShape:
    """What one task asks Ray for, and the device it trains on there."""

    num_cpus: float
    num_gpus: float
    device: str  # "cpu", or "cuda:0": the GPU Ray gives the task (its only visible one, CUDA_VISIBLE_DEVICES)


def task_shape(device: str, threads: int, jobs_per_device: int) -> TaskShape:
    """One task per ``threads`` cores on the CPU; on GPUs ``1 / jobs_per_device`` of one GPU and one core."""
    if device == "cpu":
        return TaskShape(float(threads), 0.0, "cpu")
    return TaskShape(1.0, 1.0 / jobs_per_device, "cuda:0")


# ---------------------------------------------------------------- inside Ray workers

@functools.lru_cache(maxsize=4)
def _workspace(settings: WorkerSettings) -> Any:
    """One workspace per worker process and settings: Ray reuses its workers across tasks."""
    return build_workspace(settings)


def _perform(group: Group, settings: WorkerSettings, sink: Any) -> tuple[str, Any]:
    """The body of a task: train ``group`` on this node; ``("outcomes", [...])`` or ``("fatal", StoreError)``."""
    ray = import_ray()
    context = ray.get_runtime_context()
    identity = {"ray_node": context.get_node_id(), "ray_task": context.get_task_id()}
    locks.use_cluster(lambda: identity, _holder_alive)
    ws = _workspace(settings)
    try:
        return "outcomes", perform_group(group, ws, settings.checkpoint_every, lambda p: sink.push.remote(p),
                                         where=f" (Ray node {identity['ray_node']})")
    except StoreError as error:
        return "fatal", error
    finally:
        locks.use_cluster(None, _holder_alive)


def _probe(token_file: str, data_root: str) -> dict[str, Any]:
    """What one node sees of the driver's folders: the token file's text and whether the data root is there."""
    try:
        seen = Path(token_file).read_text()
    except OSError as error:
        seen = f"<{type(error).__name__}: {error.strerror or error}>"
    return {"host": socket.gethostname(), "token": seen, "data_root": Path(data_root).is_dir()}


@functools.lru_cache(maxsize=1)
def _remote_functions() -> dict[str, Any]:
    """The Ray remote functions and actor class, made once Ray is imported."""
    ray = import_ray()

    class ProgressSink:
        """Collects the progress reports of every task until the driver drains them."""

        def __init__(self) -> None:
            self.items: list[Any] = []

        def push(self, item: Any) -> None:
            self.items.append(item)

        def drain(self) -> list[Any]:
            items, self.items = self.items, []
            return items

    return {
        "perform": ray.remote(max_retries=TASK_RETRIES, retry_exceptions=False)(_perform),
        "probe": ray.remote(num_cpus=0, max_retries=0)(_probe),
        "alive": ray.remote(num_cpus=0, max_retries=0)(locks.is_alive_here),
        "sink": ray.remote(num_cpus=0)(ProgressSink),
    }


def _on_node(node_id: str) -> Any:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)


_verdicts: dict[tuple, tuple[float, bool | None]] = {}


def _holder_alive(holder: dict[str, Any]) -> bool | None:
    """Whether the holder of a lock of another host lives, asked of its Ray node; ``None`` where Ray cannot tell.

    The retry of a task whose attempt died holds the same task id: the
    earlier attempt's lock is its own to take over. A node Ray reports dead
    holds nothing. Otherwise a small task on the holder's node checks its
    process (pid and start time, as for a local lock).
    """
    ray = import_ray()
    node = holder.get("ray_node")
    if not node or not ray.is_initialized():
        return None
    try:
        if holder.get("ray_task") and holder.get("ray_task") == ray.get_runtime_context().get_task_id():
            return False
    except Exception:  # the driver has no task id
        pass
    key = (node, holder.get("pid"), holder.get("started"), holder.get("boot"))
    now = time.monotonic()
    if key in _verdicts and now - _verdicts[key][0] < HOLDER_CHECK_SECONDS:
        return _verdicts[key][1]
    verdict: bool | None
    if not any(n["NodeID"] == node and n["Alive"] for n in ray.nodes()):
        verdict = False
    else:
        try:
            verdict = bool(ray.get(_remote_functions()["alive"].options(scheduling_strategy=_on_node(node))
                                   .remote(holder), timeout=30))
        except Exception:  # the node cannot answer now: assume the holder lives
            verdict = None
    _verdicts[key] = (now, verdict)
    return verdict


# ---------------------------------------------------------------- the driver's side

def _crash_message(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"the Ray task training this run ended without an outcome ({type(error).__name__}: " \
           f"{text[0] if text else ''})"


class RayExecutor:
    """Submits groups of runs as Ray tasks; ``address``: ``auto``, ``host:port``, or ``""`` for a new local cluster."""

    def __init__(self, settings: WorkerSettings, address: str = "", device: str = "auto", jobs_per_device: int = 1):
        ray = import_ray()
        self._ray = ray
        env = {name: os.environ[name] for name in FORWARDED_ENV if os.environ.get(name)}
        init: dict[str, Any] = {"runtime_env": {"env_vars": env}} if env else {}
        quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
        if address:
            ray.init(address=address, **quiet, **init)
        else:
            ray.init(address="local", include_dashboard=False, **quiet, **init)
        self.address = address or "local"
        resources = ray.cluster_resources()
        gpus = resources.get("GPU", 0.0)
        if device.startswith("cuda") and not gpus:
            ray.shutdown()
            raise UserError(f"device {device!r} asks for a GPU but the Ray cluster at {self.address} has none")
        kind = "cuda" if device.startswith("cuda") or (device == "auto" and gpus) else "cpu"
        self.shape = task_shape(kind, settings.threads, jobs_per_device)
        self.settings = replace(settings, output=str(Path(settings.output).resolve()),
                                data_root=Path(settings.data_root).resolve(), device=self.shape.device)
        if kind == "cpu":
            self.capacity = max(1, int(resources.get("CPU", 1.0) // self.shape.num_cpus))
        else:
            self.capacity = max(1, int(gpus * jobs_per_device))
        self._functions = _remote_functions()
        self._sink = self._functions["sink"].remote()
        self._in_flight: dict[Any, Group] = {}
        locks.use_cluster(None, _holder_alive)

    @property
    def device(self) -> str:
        """The device every task trains on: ``cpu`` or ``cuda:0`` (the GPU Ray assigns it)."""
        return self.shape.device

    def nodes(self) -> list[dict[str, Any]]:
        """The live nodes of the cluster: Ray's node id and host name."""
        return [{"node_id": n["NodeID"], "host": n["NodeManagerHostname"]} for n in self._ray.nodes() if n["Alive"]]

    def check_shared(self) -> None:
        """Refuse to schedule unless every live node sees the output folder (and the data) as the driver does.

        The driver writes a token into the output folder; a task on each node
        reads it back. A node that reads something else (another folder of
        the same path) or nothing is named in one error.
        """
        token = uuid.uuid4().hex
        output = Path(self.settings.output)
        output.mkdir(parents=True, exist_ok=True)
        path = output / f".lthbench-probe-{token}"
        path.write_text(token)
        try:
            nodes = self.nodes()
            probe = self._functions["probe"]
            answers = self._ray.get([probe.options(scheduling_strategy=_on_node(n["node_id"]))
                                     .remote(str(path), str(self.settings.data_root)) for n in nodes], timeout=120)
        finally:
            path.unlink(missing_ok=True)
        blind = [f"{a['host']} (node {n['node_id'][:12]}) read {a['token'][:60]!r}"
                 for n, a in zip(nodes, answers) if a["token"] != token]
        if blind:
            raise UserError(f"the output folder {output} is not shared by every node of the Ray cluster at "
                            f"{self.address}: the driver wrote a probe file there, but " + "; ".join(blind)
                            + ". Put [benchmark].output (--output) on a file system that every node mounts at the "
                            "same path (NFS, Lustre, a mounted bucket)")
        dataless = [f"{a['host']} (node {n['node_id'][:12]})" for n, a in zip(nodes, answers) if not a["data_root"]]
        if dataless:
            raise UserError(f"the data root {self.settings.data_root} is not a folder on " + ", ".join(dataless)
                            + "; put the data sets on a path every node mounts (--data-root)")

    def submit(self, group: Group) -> None:
        """Start one Ray task for ``group`` with this executor's resources per task."""
        task = self._functions["perform"].options(num_cpus=self.shape.num_cpus, num_gpus=self.shape.num_gpus)
        self._in_flight[task.remote(group, self.settings, self._sink)] = group

    def wait(self, timeout: float, on_progress: ProgressCallback) -> list[Outcome]:
        """Outcomes of the tasks that ended within ``timeout`` seconds; progress reports go to ``on_progress``."""
        ray = self._ray
        if not self._in_flight:
            time.sleep(timeout)
            return []
        refs = list(self._in_flight)
        ray.wait(refs, num_returns=1, timeout=timeout)
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        for progress in ray.get(self._sink.drain.remote()):
            on_progress(progress)
        outcomes: list[Outcome] = []
        for ref in ready:
            group = self._in_flight.pop(ref)
            try:
                kind, payload = ray.get(ref)
            except ray.exceptions.RayError as error:  # its worker or node died more often than Ray retries
                outcomes += self._lost(ref, group, error)
                continue
            if kind == "fatal":
                raise payload
            outcomes += payload
        return outcomes

    def _lost(self, ref: Any, group: Group, error: BaseException) -> list[Outcome]:
        """The outcomes of a task that ended without any: its locks go, its runs are crashed (alone: retried)."""
        task = ref.task_id().hex()
        store = Store(self.settings.output)
        for spec in group:
            locks.release_if(store.lock_path(spec.run_id), lambda holder: holder.get("ray_task") == task)
        status = "crashed_in_group" if len(group) > 1 else "crashed"
        return [Outcome(spec.run_id, status, _crash_message(error)) for spec in group]

    def shutdown(self) -> None:
        """Cancel outstanding tasks (their checkpoints stay) and leave the cluster (a local one stops)."""
        ray = self._ray
        for ref in self._in_flight:
            ray.cancel(ref, force=True)
        self._in_flight.clear()
        locks.use_cluster(None, None)
        ray.shutdown()
