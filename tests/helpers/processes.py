"""Drive ``lthbench run`` in a subprocess, interrupt it, and compare the records it leaves."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

#: Record fields that differ between two runs of the same matrix.
TIMING_FIELDS = ("wall_time",)


def comparable_records(output) -> dict[str, dict]:
    """Every record of an output folder by run id, minus timings."""
    records = {}
    for path in sorted(output.glob("runs/*/record.json")):
        record = json.loads(path.read_text())
        records[record["run_id"]] = {k: v for k, v in record.items() if k not in TIMING_FIELDS}
    return records


def lthbench_run(path, *args):
    """``lthbench run path *args`` in a subprocess with one thread, output piped."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LTHBENCH_DATA": str(os.environ.get("LTHBENCH_DATA", ""))}
    return subprocess.Popen([sys.executable, "-m", "lthbench.cli", "run", str(path), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)


def kill_when(process, condition, timeout=60.0, signal_number=signal.SIGKILL):
    """Send ``signal_number`` to ``process`` as soon as ``condition()`` holds (or when it ends by itself)."""
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        if condition():
            process.send_signal(signal_number)
            break
        time.sleep(0.005)
    process.wait()
