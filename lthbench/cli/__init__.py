"""The ``lthbench`` command: its parser, and the exit codes of errors (the subcommands are in ``commands``)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator

from rich.console import Console

from lthbench import __version__
from lthbench.cli.commands import COMMANDS
from lthbench.errors import UserError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lthbench", description="Lottery-ticket experiments with statistics.")
    parser.add_argument("--version", action="version", version=f"lthbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def data_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-root", help="folder holding the data sets (default: $LTHBENCH_DATA or ~/.cache/lthbench/data)")
        p.add_argument("--download", action=argparse.BooleanOptionalAction, default=None,
                       help="let torchvision download missing data sets, or never (--no-download); default: only "
                       "into ~/.cache/lthbench/data when no data root is named and a data set is missing")

    def plugin_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--plugin", "-p", action="append", default=[], metavar="FILE.py|MODULE",
                       help="load a local plugin without packaging it (repeatable; adds to $LTHBENCH_PLUGINS)")

    run = sub.add_parser("run", help="run the matrix of a benchmark file (resumable)")
    run.add_argument("file")
    plugin_option(run)
    data_options(run)
    run.add_argument("--device", help="override [benchmark].device: auto, cpu, cuda or cuda:N")
    run.add_argument("--output", help="override [benchmark].output")
    run.add_argument("--retry-failed", action="store_true", help="run failed runs again")
    run.add_argument("--quiet", action="store_true", help="print only the final summary")
    run.add_argument("--devices", help="comma-separated devices for worker processes, e.g. cuda:0,cuda:1 "
                     "(default: every visible GPU, else the CPU)")
    run.add_argument("--jobs-per-device", type=int, default=1, metavar="K",
                     help="worker processes per GPU, for small networks (default 1)")
    run.add_argument("--jobs", type=int, metavar="N",
                     help="worker processes on the CPU; they share its cores (default: one per usable core, at most 8)")
    run.add_argument("--threads", type=int, metavar="N", help="torch CPU threads per worker (default: "
                     "[benchmark].threads, else the usable cores divided among the workers)")
    run.add_argument("--executor", choices=("local", "ray"),
                     help="where runs train: local worker processes, or tasks on a Ray cluster "
                     "(default: [execution].backend, else local)")
    run.add_argument("--ray-address", metavar="ADDRESS",
                     help="the Ray cluster to run on: auto (the running one), or host:port; implies --executor ray "
                     "(default: [execution].address, else a new Ray instance on this machine)")
    run.add_argument("--checkpoint-every", type=int, default=1000, metavar="N",
                     help="save a resumable checkpoint every N training iterations; 0 = never (default 1000)")
    run.add_argument("--batch-trials", type=int, metavar="N",
                     help="train up to N pruned runs of one architecture and training setup together in one "
                     "batched step (one checkpoint for the group); 1 = off (default: 4 on the CPU, where networks "
                     "with convolutions then train one at a time; on a GPU as many as half of its free memory "
                     "holds, at most 64)")

    validate = sub.add_parser("validate", help="check a benchmark file and print its expanded matrix")
    validate.add_argument("file")
    plugin_option(validate)
    data_options(validate)
    validate.add_argument("--no-probe", action="store_true",
                          help="skip the short training probe that estimates the matrix's time")

    status = sub.add_parser("status", help="show which runs of a benchmark are done, failed, blocked or pending")
    status.add_argument("file")
    plugin_option(status)
    status.add_argument("--output", help="override [benchmark].output")

    report = sub.add_parser("report", help="write an HTML report with statistics from result folders")
    report.add_argument("results", nargs="+")
    report.add_argument("-o", "--output", help="HTML file to write (default: report.html in the first results folder)")
    report.add_argument("--csv", help="also write one row per training run to this CSV file")
    report.add_argument("--stats-csv", help="also write the statistical comparisons to this CSV file")
    report.add_argument("--figures", metavar="DIR", help="also write every figure to this folder as SVG, PNG and PDF")

    bench = sub.add_parser("bench", help="measure lthbench's trainer against a plain PyTorch DataLoader loop")
    data_options(bench)
    bench.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    bench.add_argument("--models", default="lenet_300_100,conv6,resnet20,vgg16", help="comma-separated cases")
    bench.add_argument("--steps", type=int, help="timed steps per side (default: 500 on a GPU, 40 on a CPU)")
    bench.add_argument("--warmup", type=int, help="untimed warm-up steps (default: 50 on a GPU, 5 on a CPU)")
    bench.add_argument("--workers", type=int, default=4, help="DataLoader workers of the reference loop")
    bench.add_argument("--trials", type=int, help="models of the batched side (default: 32 on a GPU, 4 on a CPU)")
    bench.add_argument("--json", help="also write the measurements to this JSON file")
    bench.add_argument("--threads", type=int, metavar="N", help="torch CPU threads (default: every usable core)")
    bench.add_argument("--contend", action="store_true", help="keep one other process busy beside the measurements")
    bench.add_argument("--chains", metavar="K,...", help="CPU only: also measure chains x threads with stacks of "
                       "K models, e.g. 1,4,8 (one process per chain)")

    index = sub.add_parser("index", help="write index.html listing every report in a folder")
    index.add_argument("folder", nargs="?", default="reports")

    plugins = sub.add_parser("plugins", help="list installed pruners, initializers, architectures and data sets")
    plugins.add_argument("--json", action="store_true", help="print JSON")
    plugin_option(plugins)
    return parser


@contextlib.contextmanager
def local_plugins(names: list[str]) -> Iterator[None]:
    """Add ``--plugin`` names to ``$LTHBENCH_PLUGINS`` while a command runs: its worker processes inherit them.

    Files are made absolute, so that a worker finds them whatever its folder.
    """
    from lthbench.registry import PLUGINS_ENV, is_plugin_file

    if not names:
        yield
        return
    before = os.environ.get(PLUGINS_ENV)
    given = [os.path.abspath(os.path.expanduser(n)) if is_plugin_file(n) else n for n in names]
    os.environ[PLUGINS_ENV] = ",".join([*filter(None, [before]), *given])
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(PLUGINS_ENV, None)
        else:
            os.environ[PLUGINS_ENV] = before


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lthbench`` console script: run one subcommand; a user's error exits 2, Ctrl-C 130."""
    args = _parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as given: matrix.json's history, the continue hint
    # Markup off: names and descriptions from plugins and configs print as written. Piped output (logs,
    # CI) gets wide lines instead of tables wrapped at 80 columns.
    console = Console(highlight=False, markup=False, width=None if sys.stdout.isatty() else 200)
    try:
        with local_plugins(getattr(args, "plugin", [])):
            return COMMANDS[args.command](args, console)
    except UserError as error:
        print(f"lthbench: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lthbench: interrupted; finished runs are kept, rerun the same command to continue", file=sys.stderr)
        return 130

