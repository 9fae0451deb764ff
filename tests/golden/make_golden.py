"""Regenerate the golden data of ``tests/run/test_golden.py`` with the code of this checkout.

Run it with the release whose behaviour is the reference (the golden files
record what *that* code does; the guard tests then check that later code
does the same)::

    cd <repository> && OMP_NUM_THREADS=1 PYTHONHASHSEED=0 LTHBENCH_DATA=<folder holding MNIST/raw> \\
        python tests/golden/make_golden.py            # run ids and the golden store
    python tests/golden/make_golden.py --ids-only     # run ids only: needs no data, trains nothing

It writes

- ``tests/golden/run_ids.json``: for ``benchmarks.toml``, every
  ``examples/*.toml`` and the tiny matrices of the end-to-end tests
  (:data:`TINY_MATRICES`), the planned runs in plan order, each as
  ``[run_id, cell_id, seed, round, initializer label]``;
- ``tests/golden/store/``: the matrix :func:`golden_matrix` (``matrix.toml``,
  its output written as :data:`OUTPUT_PLACEHOLDER`) run by ``lthbench run``
  in this process with the default options (``--jobs 1``, and on the CPU
  ``--batch-trials 1``: nothing batches), on one torch thread; kept are
  ``matrix.json`` and every ``runs/<id>/record.json``, no tensors, checkpoints,
  locks or logs.

The output is deterministic: run ids are content hashes, the CPU training is
bitwise repeatable on one thread, and the few fields that depend on the
moment or the folder (:data:`NORMALISED_RECORD`, :data:`NORMALISED_MATRIX`)
are written as fixed values.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

GOLDEN = Path(__file__).resolve().parent
TESTS = GOLDEN.parent
REPO = TESTS.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from helpers import tiny_matrix  # noqa: E402  (needs the tests folder on the path)

RUN_IDS = GOLDEN / "run_ids.json"
STORE = GOLDEN / "store"
#: The output path written into ``store/matrix.toml``; the tests replace it (quotes included) by a real folder.
OUTPUT_PLACEHOLDER = "@OUTPUT@"
#: The ``lthbench run`` options of the golden store: the defaults, written out (``--jobs`` 1 and, on the CPU,
#: ``--batch-trials`` 1, so every run trains alone; ``--checkpoint-every`` 1000 is beyond the 60 iterations).
RUN_OPTIONS = ("--quiet",)
#: Record fields that depend on the moment, written as these values in the golden records.
NORMALISED_RECORD = {"wall_time": 1.0}
#: matrix.json fields that depend on the moment or the folder, written as these values in the golden matrix.
NORMALISED_MATRIX = {"started": "2000-01-01T00:00:00+00:00", "finished": "2000-01-01T00:00:01+00:00",
                     "git_commit": None}

REWIND_TOO = '["original", { name = "rewind", iteration = 20 }]'
#: The tiny matrices that the end-to-end tests write, by the test file and helper that writes them: keyword
#: arguments of :func:`tiny_matrix.write_matrix` (``output`` aside: it is not part of any run id).
TINY_MATRICES: dict[str, dict[str, Any]] = {
    "default": {},
    "default-original": {"initializer": '"original"'},
    "default-rewind-20": {"initializer": REWIND_TOO},
    "default-rewind-epoch-50": {"initializer": '["original", { name = "rewind", epoch = 50 }]'},
    "test_runner:one-seed": {"name": "runner", "seeds": (0,), "pruner": ["layerwise_magnitude"], "iterations": 40},
    "test_runner:two-seeds": {"name": "runner", "seeds": (0, 1), "pruner": ["layerwise_magnitude"],
                              "iterations": 40},
    "test_runner:layerwise-and-global": {"name": "runner", "seeds": (0, 1),
                                         "pruner": ["layerwise_magnitude", "global_magnitude"], "iterations": 40},
    "test_runner:rewind-30": {"iterations": 40, "initializer": '{ name = "rewind", iteration = 30 }'},
    "test_lottery:iterative": {"name": "e2e", "seeds": (0, 1), "initializer": tiny_matrix.THREE_INITIALIZERS,
                               "rounds": 3, "schedule": 'mode = "iterative"'},
    "test_lottery:one-shot": {"name": "e2e", "seeds": (0,), "initializer": '["original"]', "rounds": 3,
                              "schedule": 'mode = "one_shot"'},
    "test_lottery:cli": {"name": "e2e", "seeds": (0,), "initializer": '["original"]', "rounds": 1,
                         "schedule": 'mode = "iterative"'},
    "test_resume:sgd-60": {"name": "resume", "optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "iterations": 60,
                           "initializer": REWIND_TOO},
    "test_resume:sgd-200": {"name": "resume", "optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "iterations": 200,
                            "initializer": REWIND_TOO},
    "test_resume:sgd-2000": {"name": "resume", "optimizer": "sgd", "lr": 0.05, "momentum": 0.9,
                             "iterations": 2000, "initializer": REWIND_TOO},
    "test_batched_runner:three-initializers": {"name": "batched", "seeds": (0, 1),
                                               "initializer": tiny_matrix.THREE_INITIALIZERS},
    "test_batched_runner:killed-group": {"seeds": (0, 1), "initializer": '["original", "reinit"]', "rounds": 1,
                                         "iterations": 200},
}


def golden_matrix(folder: Path, output: Path | str) -> Path:
    """Write the matrix of the golden store to ``folder / "matrix.toml"``: 2 seeds, 2 pruners, 3 initializers, 2 rounds."""
    return tiny_matrix.write_matrix(folder, name="golden", seeds=(0, 1), output=Path(output),
                                    pruner=["layerwise_magnitude", "random"],
                                    initializer=tiny_matrix.THREE_INITIALIZERS, rounds=2)


def unique_runs(runs: list[list[Any]]) -> list[list[Any]]:
    """``runs`` with each run id once, where it first appears (a dense run shared by cells was listed per cell)."""
    seen: set[str] = set()
    return [run for run in runs if not (run[0] in seen or seen.add(run[0]))]


def planned(path: Path, registry: Any) -> list[list[Any]]:
    """The runs of a matrix file in plan order, each as ``[run_id, cell_id, seed, round, initializer label]``."""
    from lthbench.config.parse import load_benchmark
    from lthbench.run.plan import plan_runs

    return [[r.run_id, r.cell_id, r.seed, r.round, r.initializer_label]
            for r in plan_runs(load_benchmark(path, registry))]


def matrix_files() -> list[Path]:
    """The checked-in matrix files whose run ids are recorded."""
    return [REPO / "benchmarks.toml", *sorted((REPO / "examples").glob("*.toml"))]


def tiny_matrix_path(folder: Path, key: str) -> Path:
    """Write the tiny matrix ``key`` of :data:`TINY_MATRICES` into ``folder`` (results under ``folder / "out"``)."""
    folder.mkdir(parents=True, exist_ok=True)
    return tiny_matrix.write_matrix(folder, **TINY_MATRICES[key])


def all_run_ids(registry: Any, scratch: Path) -> dict[str, list[list[Any]]]:
    """What ``run_ids.json`` holds: checked-in files by their path in the repository, tiny matrices by key."""
    result = {str(path.relative_to(REPO)): planned(path, registry) for path in matrix_files()}
    for key in TINY_MATRICES:
        result[f"tiny/{key}"] = planned(tiny_matrix_path(scratch / key.replace(":", "-"), key), registry)
    return result


def write_run_ids(path: Path, run_ids: dict[str, list[list[Any]]]) -> None:
    """``run_ids.json`` with one run a line, so that a changed id shows as a changed line."""
    chunks = []
    for key, runs in run_ids.items():
        lines = ",\n".join(f"  {json.dumps(run)}" for run in runs)
        chunks.append(f" {json.dumps(key)}: [\n{lines}\n ]")
    path.write_text("{\n" + ",\n".join(chunks) + "\n}\n")


def normalised_matrix(matrix: dict[str, Any]) -> dict[str, Any]:
    """``matrix.json`` with its moment- and folder-dependent fields fixed (:data:`NORMALISED_MATRIX`)."""
    matrix = {**matrix, **NORMALISED_MATRIX}
    matrix["benchmark"] = {**matrix["benchmark"], "source": "matrix.toml"}
    config = json.loads(json.dumps(matrix["config"]))
    config["benchmark"]["output"] = OUTPUT_PLACEHOLDER
    matrix["config"] = config
    return matrix


def write_json(path: Path, data: Any) -> None:
    """JSON the way the store writes it (indent 1, sorted keys), so that golden files read like real ones."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=True, default=str))


def make_store(data_root: Path, scratch: Path) -> None:
    """Run the golden matrix with ``lthbench run`` and copy its records and matrix.json into :data:`STORE`."""
    import torch

    from lthbench.cli import main

    torch.set_num_threads(1)
    folder = scratch / "store"
    folder.mkdir()
    out = folder / "out"
    path = golden_matrix(folder, out)
    code = main(["run", str(path), "--data-root", str(data_root), *RUN_OPTIONS])
    if code != 0:
        raise SystemExit(f"lthbench run exited {code}")
    shutil.rmtree(STORE, ignore_errors=True)
    STORE.mkdir(parents=True)
    toml = path.read_text().replace(json.dumps(str(out)), json.dumps(OUTPUT_PLACEHOLDER))
    (STORE / "matrix.toml").write_text(toml)
    write_json(STORE / "matrix.json", normalised_matrix(json.loads((out / "matrix.json").read_text())))
    for record_path in sorted(out.glob("runs/*/record.json")):
        record = {**json.loads(record_path.read_text()), **NORMALISED_RECORD}
        write_json(STORE / "runs" / record_path.parent.name / "record.json", record)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ids-only", action="store_true", help="write run_ids.json only (no data, no training)")
    parser.add_argument("--data-root", help="folder holding MNIST/raw (default: $LTHBENCH_DATA)")
    args = parser.parse_args(argv)
    from conftest import find_data_root
    from lthbench.registry import default_registry

    with tempfile.TemporaryDirectory(prefix="lthbench-golden-") as scratch:
        write_run_ids(RUN_IDS, all_run_ids(default_registry(), Path(scratch) / "ids"))
        print(f"wrote {RUN_IDS}")
        if not args.ids_only:
            data_root = Path(args.data_root) if args.data_root else find_data_root()
            if data_root is None:
                raise SystemExit("no data root: pass --data-root or set LTHBENCH_DATA to a folder holding MNIST/raw")
            make_store(data_root, Path(scratch))
            print(f"wrote {STORE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
