"""The Ray executor on a real two-node Ray cluster on loopback: the same records as a local run, faults survived.

One cluster serves the whole module: a head node and a worker node, one CPU
each, both on this machine (``ray start``), stopped at the end even when a
test fails. The drivers are real ``lthbench run`` processes.
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
import time
from pathlib import Path

import pytest

from helpers import tiny_matrix
from helpers.processes import TIMING_FIELDS, kill_when, lthbench_run

try:
    import ray
except ImportError:
    if os.environ.get("CI"):  # CI installs lthbench[ray]: a missing Ray there is a failure, not a skip
        raise
    pytest.skip("Ray is not installed (pip install 'lthbench[ray]')", allow_module_level=True)

RAY = str(Path(sys.executable).parent / "ray")
#: Record fields that name where and how fast a run trained, which differ between executors.
PLACE_FIELDS = (*TIMING_FIELDS, "host")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1"}
    return subprocess.run([RAY, *args], env=env, capture_output=True, text=True, timeout=180)


def _alive_nodes(address: str) -> list[dict]:
    out = subprocess.run([sys.executable, "-c", "import json, ray; ray.init(address=%r, log_to_driver=False); "
                          "print(json.dumps([n for n in ray.nodes() if n['Alive']]))" % address],
                         capture_output=True, text=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else []


@pytest.fixture(scope="module")
def cluster():
    """The address of a two-node Ray cluster on 127.0.0.1 (1 CPU per node) and its node ids."""
    port = _free_port()
    address = f"127.0.0.1:{port}"
    try:
        head = _ray("start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false",
                    "--node-ip-address=127.0.0.1", "--disable-usage-stats")
        assert head.returncode == 0, head.stdout + head.stderr
        worker = _ray("start", f"--address={address}", "--num-cpus=1", "--node-ip-address=127.0.0.1")
        assert worker.returncode == 0, worker.stdout + worker.stderr
        deadline = time.monotonic() + 60
        while len(nodes := _alive_nodes(address)) < 2 and time.monotonic() < deadline:
            time.sleep(1)
        assert len(nodes) == 2, f"the cluster has {len(nodes)} live nodes, not 2"
        yield address, sorted(n["NodeID"] for n in nodes)
    finally:
        _ray("stop", "--force")


def _matrix(folder: Path, **training) -> Path:
    return tiny_matrix.write_matrix(folder, name="ray", seeds=(0, 1), initializer='["original", "reinit"]',
                                    rounds=2, **training)


def _records(output: Path) -> dict[str, dict]:
    records = {}
    for path in sorted(output.glob("runs/*/record.json")):
        record = json.loads(path.read_text())
        records[record["run_id"]] = {k: v for k, v in record.items() if k not in PLACE_FIELDS}
    return records


def _finish(process: subprocess.Popen, timeout: float = 300) -> str:
    out, _ = process.communicate(timeout=timeout)
    return out.decode()


def _nodes_in_logs(output: Path) -> set[str]:
    return {node for path in output.glob("runs/*/log.txt") for node in re.findall(r"Ray node ([0-9a-f]+)",
                                                                                 path.read_text())}


def _one_record_each(output: Path, runs: int) -> None:
    """Every run recorded, and each trained to its end once: one ``finished`` line in its log."""
    logs = sorted(output.glob("runs/*/log.txt"))
    assert len(list(output.glob("runs/*/record.json"))) == runs == len(logs)
    for log in logs:
        assert log.read_text().count("finished: done") == 1, log.read_text()


RUNS = 2 * (1 + 2 * 2)  # two seeds: a dense run, and two rounds of a ticket and its reinit control


@pytest.fixture(scope="module")
def local_records(tmp_path_factory, data_root):
    """The records of the tiny matrix trained by local worker processes, one thread each."""
    folder = tmp_path_factory.mktemp("local")
    process = lthbench_run(_matrix(folder), "--jobs", "2", "--threads", "1")
    out = _finish(process)
    assert process.returncode == 0, out
    return _records(folder / "out")


def test_a_matrix_on_two_nodes_equals_the_local_run(tmp_path, cluster, local_records):
    address, node_ids = cluster
    process = lthbench_run(_matrix(tmp_path), "--executor", "ray", "--ray-address", address)
    out = _finish(process)
    assert process.returncode == 0, out
    assert _records(tmp_path / "out") == local_records
    _one_record_each(tmp_path / "out", RUNS)
    assert sorted(_nodes_in_logs(tmp_path / "out")) == node_ids  # both nodes trained runs
    hosts = {json.loads(p.read_text())["host"] for p in (tmp_path / "out").glob("runs/*/record.json")}
    assert hosts == {socket.gethostname()}


def _training_with_checkpoint(output: Path) -> dict | None:
    """The lock holder of a run that trains alone and has saved a checkpoint (in its own folder), if any."""
    for lock in output.glob("runs/*/lock"):
        if not (lock.parent / "checkpoint.pt").exists():
            continue
        try:
            return {**json.loads(lock.read_text()), "run": lock.parent.name}
        except (OSError, ValueError):
            continue
    return None


def test_a_killed_worker_is_retried_from_its_checkpoint(tmp_path, cluster, data_root):
    address, _ = cluster
    matrix = _matrix(tmp_path, iterations=300, eval_every=50)
    output = tmp_path / "out"
    process = lthbench_run(matrix, "--executor", "ray", "--ray-address", address, "--checkpoint-every", "50")
    killed = None
    deadline = time.monotonic() + 240
    while killed is None and process.poll() is None and time.monotonic() < deadline:
        holder = _training_with_checkpoint(output)
        if holder and holder.get("ray_task"):
            os.kill(holder["pid"], signal.SIGKILL)  # the Ray worker process training this run
            killed = holder
        time.sleep(0.02)
    out = _finish(process)
    assert killed is not None, "no run was caught training with a checkpoint: " + out
    assert process.returncode == 0, out
    _one_record_each(output, RUNS)
    log = (output / "runs" / killed["run"] / "log.txt").read_text()
    assert "resumed from the checkpoint at iteration" in log, log


def test_a_killed_driver_is_run_again_and_skips_what_is_stored(tmp_path, cluster, local_records):
    address, _ = cluster
    matrix = _matrix(tmp_path)
    output = tmp_path / "out"
    first = lthbench_run(matrix, "--executor", "ray", "--ray-address", address)
    kill_when(first, lambda: len(list(output.glob("runs/*/record.json"))) >= 2, timeout=240)
    stored_before = {p.parent.name: p.read_bytes() for p in output.glob("runs/*/record.json")}
    assert 2 <= len(stored_before) < RUNS, "the driver was not killed mid-matrix"
    second = lthbench_run(matrix, "--executor", "ray", "--ray-address", address)
    out = _finish(second)
    assert second.returncode == 0, out
    assert _records(output) == local_records
    _one_record_each(output, RUNS)
    for run_id, data in stored_before.items():  # what was stored stays as it was
        assert (output / "runs" / run_id / "record.json").read_bytes() == data


def test_the_probe_tells_what_a_node_sees_of_the_output_folder(tmp_path, data_root):
    from lthbench.run.cluster import _probe

    (tmp_path / "token").write_text("abc")
    assert _probe(str(tmp_path / "token"), str(data_root))["token"] == "abc"
    seen = _probe(str(tmp_path / "elsewhere" / "token"), str(tmp_path / "no-data"))
    assert seen["token"].startswith("<FileNotFoundError") and not seen["data_root"]


def test_a_lock_of_another_host_is_judged_on_its_ray_node(cluster):
    """Locks name their Ray node: a holder on another host is asked about there, not trusted forever."""
    from lthbench.run import cluster as ray_cluster
    from lthbench.run import locks

    address, node_ids = cluster
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        ray.init(address=address, log_to_driver=False)
        live = {"host": "another-host", "boot": locks._boot_id(), "pid": sleeper.pid,
                "started": locks._start_time(sleeper.pid), "ray_node": node_ids[1]}
        assert ray_cluster._holder_alive(live) is True
        ray_cluster._verdicts.clear()
        sleeper.kill()
        sleeper.wait()
        assert ray_cluster._holder_alive(live) is False  # its process is gone on that node
        ray_cluster._verdicts.clear()
        assert ray_cluster._holder_alive({**live, "ray_node": "ff" * 28}) is False  # no such live node
        assert ray_cluster._holder_alive({k: v for k, v in live.items() if k != "ray_node"}) is None
    finally:
        sleeper.kill()
        ray_cluster._verdicts.clear()
        ray.shutdown()


def test_an_output_folder_that_a_node_does_not_share_is_refused(tmp_path, cluster, data_root):
    """A third node whose view of the output folder is its own (a tmpfs in its own mount namespace)."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("giving a node its own mount namespace needs root and unshare")
    address, _ = cluster
    output = tmp_path / "out"
    output.mkdir()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1"}
    node = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                             f'mount -t tmpfs tmpfs "{output}" && exec "{RAY}" start --address={address} '
                             "--num-cpus=1 --node-ip-address=127.0.0.1 --block"],
                            env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while len(_alive_nodes(address)) < 3 and time.monotonic() < deadline:
            time.sleep(1)
        assert len(_alive_nodes(address)) == 3, "the third node did not join"
        done = subprocess.run([sys.executable, "-m", "lthbench.cli", "run", str(_matrix(tmp_path)),
                               "--executor", "ray", "--ray-address", address], capture_output=True, text=True,
                              timeout=180)
        assert done.returncode == 2, done.stdout + done.stderr
        assert "is not shared by every node of the Ray cluster" in done.stderr, done.stderr
        assert "FileNotFoundError" in done.stderr and "Traceback" not in done.stderr
        assert not list(output.glob("runs/*"))  # nothing was scheduled
    finally:
        os.killpg(node.pid, signal.SIGKILL)
        node.wait()
