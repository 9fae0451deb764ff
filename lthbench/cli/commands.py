"""The subcommands of ``lthbench``: each takes the parsed arguments and a console and returns the exit code.

Heavy modules (torch, pandas) and the plugin registry are imported when a
command runs, so that ``lthbench --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

from lthbench.errors import UserError
from lthbench.run.status import STOPPED, RunStatus

#: The status columns of ``lthbench status``, in the order shown.
STATUS_COLUMNS = (RunStatus.DONE, RunStatus.RUNNING, RunStatus.DIVERGED, RunStatus.FAILED, RunStatus.BLOCKED,
                  RunStatus.PENDING)


def _load(args: argparse.Namespace):
    from lthbench.config.parse import load_benchmark
    from lthbench.registry import default_registry

    registry = default_registry()
    return registry, load_benchmark(args.file, registry)


def _data(args: argparse.Namespace, benchmark, registry, console: Console) -> tuple[Path, bool]:
    """The data root and whether torchvision may download into it; a missing data set it may not fetch exits 2.

    ``run`` downloads what is missing before any run starts (:func:`lthbench.run.scheduler.fetch_data`).
    """
    from lthbench.config.parse import check_data, missing_data
    from lthbench.data_root import data_root_named, resolve_data_root, resolve_download

    root = resolve_data_root(args.data_root, benchmark.data_root)
    missing = missing_data(benchmark, registry, root)
    download = resolve_download(args.download, benchmark.download, data_root_named(args.data_root, benchmark.data_root),
                                bool(missing))
    check_data(benchmark, registry, root, download)
    if missing and download:
        console.print(f"{', '.join(missing)}: not in {root}; torchvision downloads it there on first use "
                      "(--no-download to forbid)", highlight=False)
    return root, download


def _check_device_option(device: str | None) -> None:
    """Refuse a ``--device`` outside the grammar of ``[benchmark].device``."""
    from lthbench.config.devices import DEVICE_CHOICES, is_device

    if device is not None and not is_device(device):
        raise UserError(f"--device: {device!r} is not allowed; use {DEVICE_CHOICES}")


def cmd_validate(args: argparse.Namespace, console: Console) -> int:
    """Print the expanded matrix, the number of runs and of training iterations.

    The runs are counted chain by chain, keeping only their ids, so the
    whole plan is never held at once.
    """
    from lthbench.run.plan import chain_runs, iterations_per_epoch, start_iteration, training_length
    from lthbench.store import Store

    registry, benchmark = _load(args)
    root, _ = _data(args, benchmark, registry, console)
    table = Table(title=f"{benchmark.name}: {len(benchmark.cells)} cells × {len(benchmark.seeds)} seeds")
    for column in ("experiment", "architecture", "dataset", "pruner", "initializers", "schedule", "training"):
        table.add_column(column)
    for cell in benchmark.cells:
        s = cell.schedule
        table.add_row(cell.experiment, cell.architecture.label, cell.dataset.label, cell.pruner.label,
                      ", ".join(r.label for r in cell.initializers), f"{s.mode}, {s.rounds} × {s.rate:g}",
                      cell.label or "-")
    console.print(table)
    seen: set[str] = set()
    iterations, epochs = 0, 0.0
    for cell in benchmark.cells:
        training = cell.training
        for seed in benchmark.seeds:
            for run in chain_runs(cell, seed):
                if run.run_id in seen:
                    continue
                seen.add(run.run_id)
                if training.epochs:
                    epochs += training.epochs
                else:
                    iterations += training_length(training) - start_iteration(run, registry,
                                                                              iterations_per_epoch(training))
    console.print(f"{len(seen)} training runs, {iterations:,} training iterations", highlight=False)
    if epochs:
        console.print(f"plus {epochs:g} epochs in runs configured by epochs", highlight=False)
    console.print(f"data root: {root}; output: {benchmark.output}", highlight=False)
    if not args.no_probe and iterations:
        _print_estimate(console, benchmark, Store(benchmark.output), iterations,
                        lambda: _probe(console, benchmark, registry, root))
    return 0


def _probe(console: Console, benchmark, registry, root: Path) -> tuple[float, str] | None:
    """Seconds per iteration from a short probe of the first cell and where they come from; ``None`` without data.

    ``validate`` never downloads: before the data is there, there is no estimate.
    """
    from lthbench.config.parse import missing_data
    from lthbench.run.estimate import PROBE_STEPS, probe

    missing = missing_data(benchmark, registry, root)
    if missing:
        console.print(f"no time estimate until {', '.join(missing)} is downloaded (lthbench run fetches it)",
                      highlight=False)
        return None
    return (probe(benchmark, registry, root, False),
            f"measured by a probe of {PROBE_STEPS} iterations of {benchmark.cells[0].architecture.label}")


def _print_estimate(console: Console, benchmark, store, iterations: int, fallback) -> None:
    """Print the time ``iterations`` will take: from the store's finished runs, else from ``fallback()``.

    ``fallback`` returns (seconds per iteration, where that comes from), or ``None`` for no estimate.
    """
    from lthbench.run.estimate import estimate_line, from_records, parallel_jobs

    measured = from_records(store.record(path.parent.name) for path in store.root.glob("runs/*/record.json"))
    if measured is not None:
        seconds, runs = measured
        found = (seconds, f"from the times of {runs} finished runs")
    else:
        found = fallback()
    if found is not None:
        console.print(estimate_line(iterations, found[0], parallel_jobs(benchmark), found[1]), highlight=False)


def _check_output_option(output: str | None) -> None:
    """Refuse an empty ``--output`` (it would mean the current folder)."""
    if output is not None and not output:
        raise UserError("--output: empty; give the folder of the results, or leave the option out for "
                        "[benchmark].output")


def _check_run_options(args: argparse.Namespace) -> None:
    """Refuse worker counts below 1, a negative checkpoint interval, an empty ``--output`` and a ``--device``
    outside the grammar."""
    _check_output_option(args.output)
    for option in ("jobs", "jobs_per_device", "batch_trials", "threads"):
        if getattr(args, option) is not None and getattr(args, option) < 1:
            raise UserError(f"--{option.replace('_', '-')} = {getattr(args, option)} must be at least 1")
    if args.checkpoint_every < 0:
        raise UserError(f"--checkpoint-every = {args.checkpoint_every} must be 0 (never) or positive")
    _check_device_option(args.device)


def _worker_devices(args: argparse.Namespace, benchmark) -> list[str]:
    """The devices of the worker processes: ``--devices``, else every device ``benchmark.device`` means."""
    import torch

    from lthbench.config.devices import is_device, visible_devices

    devices = args.devices.split(",") if args.devices else visible_devices(benchmark.device)
    for device in devices:
        if not is_device(device, auto=False):
            raise UserError(f"--devices: {device!r} is not a device; give cpu, cuda or cuda:N, comma-separated")
    if any(d.startswith("cuda") for d in devices) and not torch.cuda.is_available():
        source = "--devices" if args.devices else "benchmark.device"
        raise UserError(f"{args.file}: {source} asks for {', '.join(devices)} but no CUDA device is available")
    if not devices:
        raise UserError(f"{args.file}: benchmark.device = {benchmark.device!r} but no CUDA device is visible")
    return devices


def _make_output_folder(args: argparse.Namespace, output: str) -> None:
    """Create the output folder; refuse one that cannot be created or written."""
    try:
        Path(output).mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"{args.file}: the output folder {output} cannot be created: {error.strerror}") from None
    if not os.access(output, os.W_OK | os.X_OK):
        raise UserError(f"{args.file}: the output folder {output} is not writable (permission denied)")


def _print_summary(console: Console, benchmark, counts: Counter, store) -> int:
    """Print the counts by status and every failure; exit 1 when any run failed, diverged or is blocked."""
    from lthbench.run.plan import runs_to_train
    from lthbench.run.scheduler import failure_lines

    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    console.print(f"{benchmark.name}: {summary}; results in {benchmark.output}", highlight=False)
    for line in failure_lines(runs_to_train(benchmark), store):
        console.print(line, highlight=False, markup=False)
    bad = sum(counts[s] for s in STOPPED)
    if bad:
        console.print(f"{bad} runs did not finish; see their records and runs/<id>/log.txt, "
                      "or rerun with --retry-failed", highlight=False)
    return 1 if bad else 0


def _backend(args: argparse.Namespace, benchmark) -> tuple[str, str]:
    """Where the runs execute (``local`` or ``ray``) and the Ray address, from the options over ``[execution]``."""
    backend = args.executor or ("ray" if args.ray_address else benchmark.backend)
    address = args.ray_address if args.ray_address is not None else benchmark.address
    if backend != "ray":
        if args.ray_address:
            raise UserError("--ray-address names a Ray cluster, which only --executor ray uses")
        return backend, ""
    for option in ("devices", "jobs"):
        if getattr(args, option) is not None:
            raise UserError(f"--{option} chooses this machine's worker processes; with --executor ray, Ray places "
                            "the runs on the cluster's nodes (choose cpu or cuda with --device)")
    return backend, address


def _ray_executor(args: argparse.Namespace, benchmark, root, download: bool, address: str):
    """A :class:`~lthbench.run.cluster.RayExecutor` whose nodes have been shown to share the output folder.

    Each task trains with ``--threads`` / ``[benchmark] threads`` torch
    threads and asks Ray for as many cores: one per task unless given, the
    rule that shares a machine's cores among its jobs (one job per core).
    """
    import lthbench.registry
    from lthbench.run.cluster import RayExecutor
    from lthbench.run.pool import WorkerSettings

    threads = args.threads or benchmark.threads or 1
    settings = WorkerSettings(benchmark.output, root, download, "cpu", threads, args.checkpoint_every,
                              lthbench.registry.default_registry)
    executor = RayExecutor(settings, address, benchmark.device, args.jobs_per_device)
    try:
        executor.check_shared()
    except BaseException:
        executor.shutdown()
        raise
    return executor, executor.device, executor.device.startswith("cuda")


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    """Run the matrix; exit 1 when any run failed, diverged or is blocked, 130 when interrupted."""
    import dataclasses

    import torch

    import lthbench.registry
    from lthbench.lottery.workspace import Workspace
    from lthbench.run.pool import LocalExecutor, WorkerSettings, worker_slots
    from lthbench.run.scheduler import run_matrix
    from lthbench.run.threads import CPU_BATCH_TRIALS, default_jobs
    from lthbench.store import Store
    from lthbench.train.memory import MAX_TRIALS

    _check_run_options(args)
    registry, benchmark = _load(args)
    if args.device:
        benchmark = dataclasses.replace(benchmark, device=args.device)
    if args.output:
        benchmark = dataclasses.replace(benchmark, output=args.output)
    backend, address = _backend(args, benchmark)
    root, download = _data(args, benchmark, registry, console)
    if backend == "local":
        devices = _worker_devices(args, benchmark)
        slots = worker_slots(devices, args.jobs_per_device, args.jobs or default_jobs(),
                             args.threads or benchmark.threads)
        on_gpu = any(d.startswith("cuda") for d in devices)
    _make_output_folder(args, benchmark.output)
    if backend == "ray":
        executor, device, on_gpu = _ray_executor(args, benchmark, root, download, address)
    else:
        device = slots[0][0]
        # Runs train in worker processes even for one job: a plugin that ends its process (os._exit, a crash)
        # then fails its run, which the scheduler records, instead of ending the matrix.
        executor = LocalExecutor([WorkerSettings(benchmark.output, root, download, device, threads,
                                                 args.checkpoint_every, lthbench.registry.default_registry)
                                  for device, threads in slots])
    batch_trials = args.batch_trials or (MAX_TRIALS if on_gpu else CPU_BATCH_TRIALS)  # GPU workers fit K to memory
    # Measured on a 2-core CPU (README, Performance): stacks of convolutional networks were slower than one at a time.
    stack_convolutions = on_gpu or args.batch_trials is not None
    if device.startswith("cuda") and not torch.cuda.is_available():  # Ray's GPUs are on other nodes
        device = "cpu"  # what the scheduler builds to group runs is built on this machine's CPU
    ws = Workspace(registry, Store(benchmark.output), root, download, torch.device(device))
    try:
        counts = run_matrix(benchmark, ws, retry_failed=args.retry_failed,
                            console=Console(quiet=True) if args.quiet else console,
                            executor=executor, checkpoint_every=args.checkpoint_every, batch_trials=batch_trials,
                            stack_convolutions=stack_convolutions, command=["lthbench", *args.argv])
    except KeyboardInterrupt:
        console.print(f"interrupted: finished runs and the latest checkpoints are kept in {benchmark.output}; "
                      f"continue with: {shlex.join(['lthbench', *args.argv])}", highlight=False, soft_wrap=True)  # copyable: one line
        return 130
    return _print_summary(console, benchmark, counts, ws.store)


def cmd_status(args: argparse.Namespace, console: Console) -> int:
    """Per cell: runs done, running, failed, blocked and pending, and the training iterations left."""
    from lthbench.run.plan import cell_runs
    from lthbench.run.scheduler import iterations_left, statuses
    from lthbench.store import Store

    _check_output_option(args.output)
    registry, benchmark = _load(args)
    store = Store(args.output or benchmark.output)
    all_runs = cell_runs(benchmark)
    state = statuses(list({run.run_id: run for run in all_runs}.values()), store)  # each run once
    table = Table(title=benchmark.name)
    for column in ("experiment", "pruner", "training", *STATUS_COLUMNS, "iterations left"):
        table.add_column(column)
    cells: dict[str, list] = {}
    for run in all_runs:
        cells.setdefault(run.cell_id, []).append(run)
    left_of: dict[str, int | None] = {}  # each run once: a dense run shared by cells is one run
    for runs in cells.values():
        cell = runs[0].cell
        counts = Counter(state[r.run_id] for r in runs)
        left = [left_of.setdefault(r.run_id, iterations_left(r, store, registry)) for r in runs
                if state[r.run_id] in (RunStatus.RUNNING, RunStatus.PENDING)]
        table.add_row(cell.experiment, cell.pruner.label, cell.label or "-",
                      *(str(counts[s]) for s in STATUS_COLUMNS), f"{sum(n for n in left if n):,}")
    console.print(table)
    totals = Counter(state.values())
    unknown = list(left_of.values()).count(None)
    console.print(f"{len(state)} training runs (a dense run shared by cells counted once): "
                  + ", ".join(f"{totals[s]} {s}" for s in STATUS_COLUMNS)
                  + f"; {sum(n for n in left_of.values() if n):,} training iterations left", highlight=False)
    total_left = sum(n for n in left_of.values() if n)
    if total_left:
        _print_estimate(console, benchmark, store, total_left, lambda: None)
    if unknown:
        console.print(f"{unknown} runs configured by epochs over a whole data set are not counted in "
                      "'iterations left'", highlight=False)
    from lthbench.report.publish import status_hints

    for line in status_hints(store.root, benchmark.report):
        console.print(line, highlight=False)
    return 0


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    """Write the HTML report (and CSV exports)."""
    from lthbench.registry import default_registry
    from lthbench.report.publish import report_command

    return report_command(args.results, args.output, args.csv, args.stats_csv, default_registry(),
                          figures=args.figures)


def cmd_bench(args: argparse.Namespace, console: Console) -> int:
    """Print throughput of lthbench's trainer and of the reference loop, and their ratio."""
    from lthbench.cli.bench import CASES, bench_command, chains_table, contention
    from lthbench.run.threads import apply_threads, default_threads
    from lthbench.config.devices import resolve_device
    from lthbench.config.parse import check_dataset
    from lthbench.data_root import resolve_data_root
    from lthbench.registry import default_registry

    registry = default_registry()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in CASES]
    if unknown:
        raise UserError(f"--models: unknown case {unknown[0]!r}; choose from {', '.join(CASES)}")
    if args.trials is not None and args.trials < 1:
        raise UserError(f"--trials: must be at least 1, got {args.trials}")
    _check_device_option(args.device)
    device = resolve_device(args.device)
    on_gpu = device.type == "cuda"
    root = resolve_data_root(args.data_root)
    for dataset in sorted({CASES[m][0] for m in models}):
        check_dataset(registry.dataset(dataset), root, bool(args.download))
    stacks = _bench_stacks(args.chains, on_gpu)
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads: must be at least 1, got {args.threads}")
    apply_threads(args.threads or default_threads(1))
    steps, warmup = args.steps or (500 if on_gpu else 40), args.warmup or (50 if on_gpu else 5)
    with contention(args.contend):
        if args.contend:
            console.print("one other busy process is running beside these measurements")
        rows = bench_command(registry, root, device, models, steps, warmup, args.workers,
                             args.trials or (32 if on_gpu else 4), print_line=console.print)
        if stacks:
            rows += chains_table(registry, root, models, steps, warmup, stacks, print_line=console.print)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


def _bench_stacks(chains: str | None, on_gpu: bool) -> list[int]:
    """The stack sizes of ``bench --chains`` (none without the option); refuses a GPU and sizes below 1."""
    if not chains:
        return []
    if on_gpu:
        raise UserError("--chains: measures CPU processes; give --device cpu")
    try:
        stacks = [int(k) for k in chains.split(",")]
    except ValueError:
        raise UserError(f"--chains: {chains!r} is not a comma-separated list of stack sizes, e.g. 1,4,8") from None
    if min(stacks) < 1:
        raise UserError(f"--chains: stack sizes must be at least 1, got {chains!r}")
    return stacks


def cmd_index(args: argparse.Namespace, console: Console) -> int:
    """Rebuild the index page of a folder of published reports."""
    from lthbench.report.publish import write_index

    console.print(f"wrote {write_index(args.folder)}")
    return 0


def cmd_plugins(args: argparse.Namespace, console: Console) -> int:
    """List every registered implementation, with its parameters (name, type, default)."""
    from lthbench.registry import default_registry

    entries = default_registry().entries()
    rows = [{"kind": e.kind, "name": e.name, "distribution": e.distribution, "version": e.version,
             "plugin": e.plugin, "description": e.description, "parameters": e.parameters} for e in entries]
    if args.json:
        print(json.dumps(rows, indent=1, default=str))
        return 0
    table = Table(title="lthbench plugins")
    for column in ("kind", "name", "distribution", "version", "description", "parameters"):
        table.add_column(column)
    for row in rows:
        parameters = "\n".join(f"{p['name']}: {p['type']}" + ("" if p["required"] else f" = {p['default']!r}")
                               for p in row["parameters"])
        table.add_row(row["kind"], row["name"], row["distribution"], row["version"], row["description"],
                      parameters or "-")
    console.print(table)
    return 0


#: The function of each subcommand.
COMMANDS = {"run": cmd_run, "validate": cmd_validate, "status": cmd_status, "report": cmd_report,
            "bench": cmd_bench, "index": cmd_index, "plugins": cmd_plugins}
