"""What running on Ray costs: a task's round trip, a run's start-up on a worker, and a tiny matrix end to end.

Measured in one invocation, against the local baseline of the same run:

- the round trip of an empty Ray task (submit, run, fetch its result), median of ``--repeats``;
- a run's start-up on a Ray worker: the first task on a fresh worker process
  (importing lthbench and torch, building the plugin registry and workspace)
  against the next ones on the same worker (the workspace is cached);
- the wall time of a tiny LeNet-300-100 matrix (2 seeds, 2 rounds, ticket and
  reinit: 10 runs) with local worker processes (``--jobs 2 --threads 1``)
  and with ``--executor ray`` on the cluster at ``--address``, and their ratio.

Without ``--address`` a two-node cluster is started on 127.0.0.1 (one CPU
per node, as the tests use) and stopped at the end.

    LTHBENCH_DATA=/path/to/data python benchmarks/ray_overhead.py [--address HOST:PORT] [--repeats 50]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MATRIX = """[benchmark]
name = "ray-overhead"
seeds = [0, 1]
output = "{output}"
device = "cpu"

[defaults]
dataset = "mnist"
architecture = "lenet_300_100"
[defaults.training]
optimizer = "adam"
lr = 1.2e-3
batch_size = 60
iterations = {iterations}
eval_every = 50
validation_size = 500
train_subset = 5000
test_subset = 1000

[[experiment]]
name = "lenet"
pruner = "layerwise_magnitude"
initializer = ["original", "reinit"]
[experiment.schedule]
rounds = 2
rate = 0.2
"""

RAY = str(Path(sys.executable).parent / "ray")


def _empty() -> None:
    return None


def _start_up(settings) -> float:
    """Seconds this worker takes to build its workspace (0 when an earlier task built it)."""
    from lthbench.run.cluster import _workspace

    started = time.perf_counter()
    cached = _workspace.cache_info().currsize
    _workspace(settings)
    return time.perf_counter() - started if not cached else 0.0


def _local_cluster() -> tuple[str, list[list[str]]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    subprocess.run([RAY, "start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false",
                    "--node-ip-address=127.0.0.1", "--disable-usage-stats"], check=True, env=env, capture_output=True)
    subprocess.run([RAY, "start", f"--address=127.0.0.1:{port}", "--num-cpus=1", "--node-ip-address=127.0.0.1"],
                   check=True, env=env, capture_output=True)
    return f"127.0.0.1:{port}", [[RAY, "stop", "--force"]]


def _timed_run(matrix: Path, *options: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "lthbench.cli", "run", str(matrix), "--quiet", *options], check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", help="a running Ray cluster (default: start two nodes on 127.0.0.1)")
    parser.add_argument("--repeats", type=int, default=50, help="empty tasks timed (default 50)")
    parser.add_argument("--iterations", type=int, default=300, help="training iterations per run (default 300)")
    args = parser.parse_args()
    if not os.environ.get("LTHBENCH_DATA"):
        parser.error("set LTHBENCH_DATA to a folder holding MNIST")
    import ray

    import lthbench.registry
    from lthbench.run.pool import WorkerSettings

    address, cleanup = (args.address, []) if args.address else _local_cluster()
    try:
        ray.init(address=address, log_to_driver=False)
        empty = ray.remote(num_cpus=1)(_empty)
        ray.get([empty.remote() for _ in range(4)])  # warm the workers
        trips = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            ray.get(empty.remote())
            trips.append(time.perf_counter() - started)
        with tempfile.TemporaryDirectory() as folder:
            settings = WorkerSettings(folder, Path(os.environ["LTHBENCH_DATA"]), False, "cpu", 1, 0,
                                      lthbench.registry.default_registry)
            start_up = ray.remote(num_cpus=1)(_start_up)
            firsts = [s for s in ray.get([start_up.remote(settings) for _ in range(2)]) if s]
            again = ray.get([start_up.remote(settings) for _ in range(2)])
        ray.shutdown()
        print(f"empty Ray task round trip: median {statistics.median(trips) * 1e3:.2f} ms over {args.repeats} "
              f"(min {min(trips) * 1e3:.2f} ms)")
        if firsts:
            print(f"a run's start-up on a fresh Ray worker (import lthbench, registry, workspace): "
                  f"median {statistics.median(firsts):.2f} s; on a worker that has one: {max(again) * 1e3:.2f} ms")
        with tempfile.TemporaryDirectory() as folder:
            times = {}
            for name, options in (("local, --jobs 2 --threads 1", ("--jobs", "2", "--threads", "1")),
                                  (f"Ray at {address}", ("--executor", "ray", "--ray-address", address))):
                output = Path(folder) / name.split(",")[0].split()[0]
                matrix = Path(folder) / f"{output.name}.toml"
                matrix.write_text(MATRIX.format(output=output, iterations=args.iterations))
                times[name] = _timed_run(matrix, *options)
            baseline = next(iter(times.values()))
            print(f"tiny matrix (10 runs x {args.iterations} iterations):")
            for name, seconds in times.items():
                print(f"  {name:<40} {seconds:7.1f} s  {seconds / baseline:5.2f}x")
    finally:
        for command in cleanup:
            subprocess.run(command, capture_output=True)


if __name__ == "__main__":
    main()
