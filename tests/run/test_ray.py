"""Runs on a real Ray cluster of two nodes on this machine: the same records as local runs, through worker and driver kills.

The cluster (two ``ray start --block`` processes on loopback, one CPU each)
is shared by the tests of this module and stopped at the end, also when a
test fails. The reference is the same tiny matrix run locally, once.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from helpers import tiny_matrix
from helpers.processes import comparable_records, kill_when, lthbench_run
from lthbench.cli import main
from lthbench.config.parse import parse_benchmark
from lthbench.errors import ConfigError

#: Seconds the cluster gets to start, and its processes to stop before they are killed.
START_TIMEOUT = 120
STOP_GRACE = 5


def write_matrix(folder: Path, execution: str = "") -> Path:
    """Two seeds, a dense run and one pruned round each: four runs in two chains that can run side by side."""
    path = tiny_matrix.write_matrix(folder, name="ray", seeds=(0, 1), rounds=1, iterations=100)
    if execution:
        path.write_text(path.read_text() + "\n[execution]\n" + execution + "\n")
    return path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _ray_start(log: Path, env: dict[str, str], *options: str) -> subprocess.Popen:
    """``ray start --block`` with one CPU, in its own process group (so that it can be stopped with its children)."""
    command = [sys.executable, "-m", "ray.scripts.scripts", "start", "--block", "--num-cpus", "1",
               "--object-store-memory", str(80 * 2**20), "--disable-usage-stats", *options]
    return subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _wait_started(process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while "Ray runtime started" not in log.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"ray start did not start:\n{log.read_text()}")
        time.sleep(0.2)


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM the process group of a ``ray start --block``, then SIGKILL what is left of it."""
    for number in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, number)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(process.pid, signal.SIGKILL)  # the raylets and workers of the group
    except ProcessLookupError:
        pass


@pytest.fixture(scope="session")
def ray_cluster():
    """The address of a running two-node Ray cluster on loopback (a head and a worker node, one CPU each)."""
    pytest.importorskip("ray", reason="the Ray tests need the ray extra: pip install -e '.[ray]'")
    temp = Path(tempfile.mkdtemp(prefix="lthbench-ray-"))  # short: Ray's socket paths live below it
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1"}
    port = _free_port()
    address = f"127.0.0.1:{port}"
    processes = []
    try:
        processes.append(_ray_start(temp / "head.log", env, "--head", "--port", str(port), "--node-ip-address",
                                    "127.0.0.1", "--include-dashboard=false", "--temp-dir", str(temp / "t")))
        _wait_started(processes[0], temp / "head.log")
        processes.append(_ray_start(temp / "worker.log", env, "--address", address, "--node-ip-address", "127.0.0.1"))
        _wait_started(processes[1], temp / "worker.log")
        yield address
    finally:
        for process in reversed(processes):
            _stop(process)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_root):
    """The records of the matrix run locally, in this process on one torch thread."""
    folder = tmp_path_factory.mktemp("local")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["run", str(write_matrix(folder)), "--data-root", str(data_root), "--quiet"]) == 0
    finally:
        torch.set_num_threads(threads)
    records = comparable_records(folder / "out")
    assert len(records) == 4 and all(r["status"] == "done" for r in records.values())
    return records


def ray_run(path: Path, address: str, *options: str) -> subprocess.Popen:
    return lthbench_run(path, "--executor", "ray", "--ray-address", address, "--checkpoint-every", "20", "--quiet",
                        *options)


def finish(process: subprocess.Popen) -> str:
    output = process.communicate(timeout=300)[0].decode()
    assert process.returncode == 0, output
    return output


def logs(output: Path) -> dict[str, str]:
    return {path.parent.name: path.read_text() for path in output.glob("runs/*/log.txt")}


def kill_a_worker_after_a_checkpoint(process: subprocess.Popen, output: Path) -> str | None:
    """SIGKILL the Ray worker process training a run as soon as the run has a checkpoint; the run's id."""
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        for checkpoint in output.glob("runs/*/checkpoint.pt"):
            log = (checkpoint.parent / "log.txt").read_text()
            pids = re.findall(r"by process (\d+)", log)
            if pids and "finished" not in log:
                os.kill(int(pids[-1]), signal.SIGKILL)
                return checkpoint.parent.name
        time.sleep(0.005)
    return None


def test_a_two_node_cluster_with_a_worker_killed_writes_the_records_of_a_local_run(ray_cluster, reference, tmp_path):
    """Field by field except timings; both nodes ran tasks; the killed run was retried from its checkpoint.

    The worker process training a run is SIGKILLed once the run has a
    checkpoint: Ray runs the task again, which takes over the dead worker's
    lock and resumes; every run ends with exactly one record.
    """
    out = tmp_path / "out"
    process = ray_run(write_matrix(tmp_path), ray_cluster)
    killed = kill_a_worker_after_a_checkpoint(process, out)
    assert killed is not None, "no run reached a checkpoint"
    assert "ray: 4 done" in finish(process)
    assert comparable_records(out) == reference
    records = [json.loads(path.read_text()) for path in out.glob("runs/*/record.json")]
    assert {record["node"] for record in records} == {socket.gethostname()}
    text = logs(out)
    nodes = {node for log in text.values() for node in re.findall(r"Ray task on node (\w+)", log)}
    assert len(nodes) == 2
    assert "resumed from the checkpoint at iteration" in text[killed]
    assert all(log.count("finished: done") == 1 for log in text.values())


def test_a_driver_killed_mid_matrix_then_rerun_completes_the_store(ray_cluster, reference, tmp_path):
    """SIGKILL to ``lthbench run --executor ray`` once one run is recorded; the rerun trains the rest, once each."""
    out = tmp_path / "out"
    path = write_matrix(tmp_path)
    process = ray_run(path, ray_cluster)
    kill_when(process, lambda: any(out.glob("runs/*/record.json")), timeout=120)
    assert process.returncode == -signal.SIGKILL
    assert len(list(out.glob("runs/*/record.json"))) < 4
    finish(ray_run(path, ray_cluster))
    assert comparable_records(out) == reference
    assert all(log.count("finished: done") == 1 for log in logs(out).values())


def test_executor_ray_without_ray_installed_is_one_sentence(tmp_path, data_root, monkeypatch, capsys):
    """Exit 2 and the pip command, from ``--executor ray`` or from ``[execution]``, before any folder is made."""
    monkeypatch.setitem(sys.modules, "ray", None)  # what ``import ray`` finds without the extra: ImportError
    for path, options in ((write_matrix(tmp_path), ["--executor", "ray"]),
                          (write_matrix(tmp_path, 'backend = "ray"'), [])):
        assert main(["run", str(path), "--data-root", str(data_root), "--quiet", *options]) == 2
        assert capsys.readouterr().err.splitlines() == [
            "lthbench: error: --executor ray needs Ray, which is not installed; install it with: "
            "pip install 'lthbench[ray]'"]
        assert not (tmp_path / "out").exists()


def test_an_address_where_no_ray_cluster_listens_is_one_sentence(tmp_path, data_root, capsys):
    pytest.importorskip("ray", reason="the Ray tests need the ray extra: pip install -e '.[ray]'")
    address = f"127.0.0.1:{_free_port()}"
    assert main(["run", str(write_matrix(tmp_path)), "--data-root", str(data_root), "--quiet", "--executor", "ray",
                 "--ray-address", address]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"lthbench: error: --ray-address {address}: no Ray cluster answers there (")
    assert len(error.splitlines()) == 1


def test_ray_address_without_the_ray_executor_is_refused(tmp_path, data_root, capsys):
    path = write_matrix(tmp_path)
    assert main(["run", str(path), "--data-root", str(data_root), "--ray-address", "auto", "--quiet"]) == 2
    assert "--ray-address needs --executor ray" in capsys.readouterr().err


@pytest.mark.parametrize("table, message", [
    ('backend = "slurm"', "execution: backend = 'slurm' is not allowed; it must be one of local, ray"),
    ('backend = "local"\naddress = "auto"', "execution: address = 'auto' is not allowed; it must be empty unless"),
    ('adress = "auto"', "execution.adress: unknown key (did you mean 'address'?)"),
])
def test_a_bad_execution_table_is_one_error_naming_its_key(tmp_path, registry, table, message):
    path = write_matrix(tmp_path, table)
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_benchmark(path.read_text(), path, registry)


def test_the_execution_table_reaches_the_benchmark(tmp_path, registry):
    path = write_matrix(tmp_path, 'backend = "ray"\naddress = "10.0.0.1:6379"')
    execution = parse_benchmark(path.read_text(), path, registry).execution
    assert (execution.backend, execution.address) == ("ray", "10.0.0.1:6379")
