"""The ``lthbench`` command: run, validate, status, report, plugins."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from lthbench import __version__
from lthbench.errors import UserError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lthbench", description="Lottery-ticket experiments with statistics.")
    parser.add_argument("--version", action="version", version=f"lthbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def data_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-root", help="folder holding the data sets (default: $LTHBENCH_DATA or ~/.cache/lthbench/data)")
        p.add_argument("--download", action="store_true", help="allow torchvision to download missing data sets")

    run = sub.add_parser("run", help="run the matrix of a benchmark file (resumable)")
    run.add_argument("file")
    data_options(run)
    run.add_argument("--device", help="override [benchmark].device: auto, cpu, cuda or cuda:N")
    run.add_argument("--output", help="override [benchmark].output")
    run.add_argument("--retry-failed", action="store_true", help="run failed runs again")
    run.add_argument("--quiet", action="store_true", help="print only the final summary")
    run.add_argument("--devices", help="comma-separated devices for worker processes, e.g. cuda:0,cuda:1 "
                     "(default: every visible GPU, else the CPU)")
    run.add_argument("--jobs-per-device", type=int, default=1, metavar="K",
                     help="worker processes per GPU, for small networks (default 1)")
    run.add_argument("--jobs", type=int, default=1, metavar="N",
                     help="worker processes on the CPU; they share its cores (default 1)")
    run.add_argument("--checkpoint-every", type=int, default=1000, metavar="N",
                     help="save a resumable checkpoint every N training iterations; 0 = never (default 1000)")
    run.add_argument("--batch-trials", type=int, metavar="N",
                     help="train up to N pruned runs of one architecture and training setup together in one "
                     "batched step (one checkpoint for the group); 1 = off (default: 1 on the CPU; on a GPU as "
                     "many as half of its free memory holds, at most 64)")

    validate = sub.add_parser("validate", help="check a benchmark file and print its expanded matrix")
    validate.add_argument("file")
    data_options(validate)

    status = sub.add_parser("status", help="show which runs of a benchmark are done, failed, blocked or pending")
    status.add_argument("file")
    status.add_argument("--output", help="override [benchmark].output")

    report = sub.add_parser("report", help="write an HTML report with statistics from result folders")
    report.add_argument("results", nargs="+")
    report.add_argument("-o", "--output", required=True, help="HTML file to write")
    report.add_argument("--csv", help="also write one row per training run to this CSV file")
    report.add_argument("--stats-csv", help="also write the statistical comparisons to this CSV file")

    bench = sub.add_parser("bench", help="measure lthbench's trainer against a plain PyTorch DataLoader loop")
    data_options(bench)
    bench.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    bench.add_argument("--models", default="lenet_300_100,conv6,resnet20,vgg16", help="comma-separated cases")
    bench.add_argument("--steps", type=int, help="timed steps per side (default: 500 on a GPU, 40 on a CPU)")
    bench.add_argument("--warmup", type=int, help="untimed warm-up steps (default: 50 on a GPU, 5 on a CPU)")
    bench.add_argument("--workers", type=int, default=4, help="DataLoader workers of the reference loop")
    bench.add_argument("--trials", type=int, help="models of the batched side (default: 32 on a GPU, 4 on a CPU)")
    bench.add_argument("--json", help="also write the measurements to this JSON file")

    index = sub.add_parser("index", help="write index.html listing every report in a folder")
    index.add_argument("folder", nargs="?", default="reports")

    plugins = sub.add_parser("plugins", help="list installed pruners, initializers, architectures and data sets")
    plugins.add_argument("--json", action="store_true", help="print JSON")
    return parser


def _load(args: argparse.Namespace):
    from lthbench.config.parse import load_benchmark
    from lthbench.registry import default_registry

    registry = default_registry()
    return registry, load_benchmark(args.file, registry)


def _data(args: argparse.Namespace, benchmark, registry) -> Path:
    from lthbench.config.parse import check_data
    from lthbench.data_root import resolve_data_root

    root = resolve_data_root(args.data_root, benchmark.data_root)
    check_data(benchmark, registry, root, args.download)
    return root


def cmd_validate(args: argparse.Namespace, console: Console) -> int:
    """Print the expanded matrix, the number of runs and of training iterations."""
    from lthbench.run.plan import plan_runs, stated_start_iteration

    registry, benchmark = _load(args)
    root = _data(args, benchmark, registry)
    table = Table(title=f"{benchmark.name}: {len(benchmark.cells)} cells × {len(benchmark.seeds)} seeds")
    for column in ("experiment", "architecture", "dataset", "pruner", "initializers", "schedule", "training"):
        table.add_column(column)
    for cell in benchmark.cells:
        s = cell.schedule
        table.add_row(cell.experiment, cell.architecture.label, cell.dataset.label, cell.pruner.label,
                      ", ".join(r.label for r in cell.initializers), f"{s.mode}, {s.rounds} × {s.rate:g}",
                      ", ".join(f"{k}={v}" for k, v in cell.overrides.items()) or "-")
    console.print(table)
    runs = list({run.run_id: run for run in plan_runs(benchmark)}.values())
    by_iterations = [r for r in runs if not r.cell.training.epochs]
    iterations = sum(r.cell.training.iterations - stated_start_iteration(r) for r in by_iterations)
    console.print(f"{len(runs)} training runs, {iterations:,} training iterations", highlight=False)
    if len(by_iterations) < len(runs):
        epochs = sum(r.cell.training.epochs for r in runs if r.cell.training.epochs)
        console.print(f"plus {epochs:g} epochs in runs configured by epochs", highlight=False)
    console.print(f"data root: {root}; output: {benchmark.output}", highlight=False)
    return 0


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    """Run the matrix; exit 1 when any run failed, diverged or is blocked, 130 when interrupted."""
    import dataclasses

    import torch

    from lthbench.train.memory import MAX_TRIALS
    from lthbench.run.pool import LocalExecutor, WorkerSettings, visible_devices, worker_slots
    from lthbench.lottery.workspace import Workspace
    from lthbench.run.plan import plan_runs
    from lthbench.run.scheduler import failure_lines, run_matrix
    from lthbench.store import Store

    registry, benchmark = _load(args)
    if args.device:
        benchmark = dataclasses.replace(benchmark, device=args.device)
    if args.output:
        benchmark = dataclasses.replace(benchmark, output=args.output)
    for option in ("jobs", "jobs_per_device", "batch_trials"):
        if getattr(args, option) is not None and getattr(args, option) < 1:
            raise UserError(f"--{option.replace('_', '-')} = {getattr(args, option)} must be at least 1")
    if args.checkpoint_every < 0:
        raise UserError(f"--checkpoint-every = {args.checkpoint_every} must be 0 (never) or positive")
    root = _data(args, benchmark, registry)
    devices = args.devices.split(",") if args.devices else visible_devices(benchmark.device)
    for device in devices:
        if not re.fullmatch(r"cpu|cuda(:\d+)?", device):
            raise UserError(f"--devices: {device!r} is not a device; give cpu, cuda or cuda:N, comma-separated")
    on_gpu = any(d.startswith("cuda") for d in devices)
    if on_gpu and not torch.cuda.is_available():
        source = "--devices" if args.devices else "benchmark.device"
        raise UserError(f"{args.file}: {source} asks for {', '.join(devices)} but no CUDA device is available")
    if not devices:
        raise UserError(f"{args.file}: benchmark.device = {benchmark.device!r} but no CUDA device is visible")
    slots = worker_slots(devices, args.jobs_per_device, args.jobs)
    batch_trials = args.batch_trials or (MAX_TRIALS if on_gpu else 1)  # the workers fit K to their memory
    download = args.download or benchmark.download
    try:
        Path(benchmark.output).mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"{args.file}: the output folder {benchmark.output} cannot be created: {error.strerror}"
                        ) from None
    if not os.access(benchmark.output, os.W_OK):
        raise UserError(f"{args.file}: the output folder {benchmark.output} is not writable")
    ws = Workspace(registry, Store(benchmark.output), root, download, torch.device(slots[0][0]))
    executor = None
    if len(slots) > 1:
        executor = LocalExecutor([WorkerSettings(benchmark.output, root, download, device, threads,
                                                 args.checkpoint_every) for device, threads in slots])
    try:
        counts = run_matrix(benchmark, ws, retry_failed=args.retry_failed,
                            console=Console(quiet=True) if args.quiet else console,
                            executor=executor, checkpoint_every=args.checkpoint_every, batch_trials=batch_trials)
    except KeyboardInterrupt:
        console.print(f"interrupted: finished runs and the latest checkpoints are kept in {benchmark.output}; "
                      f"continue with: lthbench run {args.file}", highlight=False)
        return 130
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    console.print(f"{benchmark.name}: {summary}; results in {benchmark.output}", highlight=False)
    for line in failure_lines(plan_runs(benchmark), ws.store):
        console.print(line, highlight=False, markup=False)
    bad = sum(counts[s] for s in ("failed", "diverged", "blocked"))
    if bad:
        console.print(f"{bad} runs did not finish; see their records and runs/<id>/log.txt, "
                      "or rerun with --retry-failed", highlight=False)
    return 1 if bad else 0


def cmd_status(args: argparse.Namespace, console: Console) -> int:
    """Per cell: runs done, running, failed, blocked and pending, and the training iterations left."""
    from collections import Counter

    from lthbench.run.plan import plan_runs
    from lthbench.run.scheduler import iterations_left, statuses
    from lthbench.store import Store

    registry, benchmark = _load(args)
    runs = plan_runs(benchmark)
    store = Store(args.output or benchmark.output)
    state = statuses(runs, store)
    columns = ("done", "running", "diverged", "failed", "blocked", "pending")
    table = Table(title=benchmark.name)
    for column in ("experiment", "pruner", "training", *columns, "iterations left"):
        table.add_column(column)
    cells: dict[str, list] = {}
    for run in runs:
        cells.setdefault(run.cell_id, []).append(run)
    unknown = 0
    for cell_runs in cells.values():
        cell = cell_runs[0].cell
        counts = Counter(state[r.run_id] for r in cell_runs)
        left = [iterations_left(r, store) for r in cell_runs if state[r.run_id] in ("running", "pending")]
        unknown += left.count(None)
        table.add_row(cell.experiment, cell.pruner.label,
                      ", ".join(f"{k}={v}" for k, v in cell.overrides.items()) or "-",
                      *(str(counts[s]) for s in columns), f"{sum(n for n in left if n):,}")
    console.print(table)
    if unknown:
        console.print(f"{unknown} runs configured by epochs over a whole data set are not counted in "
                      "'iterations left'", highlight=False)
    return 0


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    """Write the HTML report (and CSV exports)."""
    from lthbench.registry import default_registry
    from lthbench.report.html import report_command

    return report_command(args.results, args.output, args.csv, args.stats_csv, default_registry())


def cmd_bench(args: argparse.Namespace, console: Console) -> int:
    """Print throughput of lthbench's trainer and of the reference loop, and their ratio."""
    from lthbench.cli.bench import CASES, bench_command
    from lthbench.data_root import resolve_data_root
    from lthbench.lottery.workspace import resolve_device
    from lthbench.registry import default_registry

    registry = default_registry()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in CASES]
    if unknown:
        raise UserError(f"--models: unknown case {unknown[0]!r}; choose from {', '.join(CASES)}")
    if args.trials is not None and args.trials < 1:
        raise UserError(f"--trials: must be at least 1, got {args.trials}")
    device = resolve_device(args.device)
    on_gpu = device.type == "cuda"
    root = resolve_data_root(args.data_root)
    for dataset in sorted({CASES[m][0] for m in models}):
        registry.dataset(dataset).check(root, args.download)
    rows = bench_command(registry, root, device, models, args.steps or (500 if on_gpu else 40),
                         args.warmup or (50 if on_gpu else 5), args.workers, args.trials or (32 if on_gpu else 4),
                         print_line=console.print)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


def cmd_index(args: argparse.Namespace, console: Console) -> int:
    """Rebuild the index page of a folder of published reports."""
    from lthbench.report.publish import write_index

    console.print(f"wrote {write_index(args.folder)}")
    return 0


def cmd_plugins(args: argparse.Namespace, console: Console) -> int:
    """List every registered implementation."""
    from lthbench.registry import default_registry

    entries = default_registry().entries()
    rows = [{"kind": e.kind, "name": e.name, "distribution": e.distribution, "version": e.version,
             "plugin": e.plugin, "description": e.description} for e in entries]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    table = Table(title="lthbench plugins")
    for column in ("kind", "name", "distribution", "version", "description"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["kind"], row["name"], row["distribution"], row["version"], row["description"])
    console.print(table)
    return 0


COMMANDS = {"run": cmd_run, "validate": cmd_validate, "status": cmd_status, "report": cmd_report,
            "bench": cmd_bench, "index": cmd_index, "plugins": cmd_plugins}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lthbench`` console script."""
    args = _parser().parse_args(argv)
    # Markup off: names and descriptions from plugins and configs print as written. Piped output (logs,
    # CI) gets wide lines instead of tables wrapped at 80 columns.
    console = Console(highlight=False, markup=False, width=None if sys.stdout.isatty() else 200)
    try:
        return COMMANDS[args.command](args, console)
    except UserError as error:
        print(f"lthbench: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lthbench: interrupted; finished runs are kept, rerun the same command to continue", file=sys.stderr)
        return 130

