"""Paths a user names: benchmark names, output folders, data roots and report destinations.

Each unusable path is one sentence naming it, exit 2, no traceback, and
nothing written outside where the user asked.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from lthbench.cli import main
from lthbench.config.parse import load_benchmark
from lthbench.errors import ConfigError
from lthbench.report.results import CSV_COLUMNS
from helpers.synthetic_results import write_synthetic_results
from helpers.tiny_matrix import write_matrix

#: A file-name component longer than any file system allows (``ENAMETOOLONG``).
TOO_LONG = "n" * 300


def one_error(capsys, *parts: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err[:2000]
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]


# --------------------------------------------------------------------------- D7: the benchmark name


def matrix_without_output(folder: Path, name: str) -> Path:
    """The tiny matrix named ``name``, its output left to the default ``results/<name>``."""
    path = write_matrix(folder, name=name)
    path.write_text("\n".join(line for line in path.read_text().splitlines() if not line.startswith("output =")))
    return path


@pytest.mark.parametrize("name", ["..", "../..", ".", "a/b", "/abs", "a\\b", "", " ", "x ", "a\x00b", "a\nb"])
def test_a_benchmark_name_that_is_no_folder_name_is_refused(name, tmp_path, capsys):
    path = matrix_without_output(tmp_path, name)
    assert main(["validate", str(path)]) == 2
    one_error(capsys, f"{path}: benchmark.name")


def test_any_accepted_name_keeps_the_default_output_under_results(registry, tmp_path, monkeypatch):
    """The class: whatever name is accepted, ``results/<name>`` is a folder strictly inside ``results``."""
    monkeypatch.chdir(tmp_path)
    rng = random.Random(7)
    alphabet = ["a", "Z", "0", ".", "..", "/", "\\", " ", "-", "_", "~", "\x00", "\n", "\t", "θ", ":", "\u202e"]
    results = (tmp_path / "results").resolve()
    accepted = 0
    for _ in range(300):
        name = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 4)))
        path = matrix_without_output(tmp_path, name)
        try:
            benchmark = load_benchmark(path, registry)
        except ConfigError as error:
            assert "benchmark.name" in str(error)
            continue
        accepted += 1
        output = Path(benchmark.output).resolve()
        assert output.parent == results, (name, output)
    assert accepted > 50


def test_the_name_is_checked_even_with_an_explicit_output(registry, tmp_path):
    path = write_matrix(tmp_path, name="..", output=tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match="benchmark.name"):  # the name is checked even when output is given
        load_benchmark(path, registry)


# --------------------------------------------------------------------------- output = ""


def test_an_empty_output_option_is_refused(tmp_path, capsys, data_root):
    path = write_matrix(tmp_path)
    assert main(["run", str(path), "--data-root", str(data_root), "--quiet", "--output", ""]) == 2
    one_error(capsys, "--output: empty")
    assert main(["status", str(path), "--output", ""]) == 2
    one_error(capsys, "--output: empty")


# --------------------------------------------------------------------------- D2: a data root that cannot be looked into


def test_a_data_root_that_cannot_be_looked_into_is_one_sentence(tmp_path, capsys):
    path = write_matrix(tmp_path)
    root = tmp_path / TOO_LONG / "data"
    assert main(["validate", str(path), "--data-root", str(root)]) == 2
    one_error(capsys, f"{path}: dataset 'mnist'", "cannot look into", "File name too long")


@pytest.mark.skipif(os.geteuid() == 0, reason="permissions do not stop root from reading a folder")
def test_a_data_root_under_an_unreadable_folder_is_one_sentence(tmp_path, capsys):
    path = write_matrix(tmp_path)
    locked = tmp_path / "locked"
    (locked / "data").mkdir(parents=True)
    locked.chmod(0)
    try:
        assert main(["validate", str(path), "--data-root", str(locked / "data")]) == 2
    finally:
        locked.chmod(0o755)
    one_error(capsys, "cannot look into", "Permission denied")


def test_bench_names_a_data_root_that_cannot_be_looked_into(tmp_path, capsys):
    assert main(["bench", "--data-root", str(tmp_path / TOO_LONG), "--models", "lenet_300_100"]) == 2
    one_error(capsys, "mnist", "cannot look into")


# --------------------------------------------------------------------------- D13: report destinations


@pytest.fixture
def results(tmp_path):
    return write_synthetic_results(tmp_path / "results")


def impossible_destinations(tmp_path: Path) -> dict[str, str]:
    """Destinations no write can succeed at, each for a different reason."""
    (tmp_path / "a-file").write_text("")
    (tmp_path / "a-folder").mkdir(exist_ok=True)
    return {"under a file": f"{tmp_path}/a-file/x", "deeper under a file": f"{tmp_path}/a-file/x/y.csv",
            "a folder": f"{tmp_path}/a-folder", "name too long": f"{tmp_path}/{TOO_LONG}.html", "empty": ""}


@pytest.mark.parametrize("option", ["-o", "--csv", "--stats-csv"])
def test_a_report_destination_that_cannot_be_written_is_one_sentence_and_nothing_is_written(option, results,
                                                                                               tmp_path, capsys):
    for why, destination in impossible_destinations(tmp_path).items():
        html = tmp_path / "report.html"
        args = {"-o": str(html), "--csv": str(tmp_path / "runs.csv"), "--stats-csv": str(tmp_path / "stats.csv")}
        args[option] = destination
        argv = ["report", str(results)] + [part for item in args.items() for part in item]
        assert main(argv) == 2, why
        line = one_error(capsys, f"lthbench: error: {option}")
        assert f"{option} {destination}: cannot be written" in line if destination else f"{option}: empty" in line
        written = [name for name in ("report.html", "runs.csv", "stats.csv") if (tmp_path / name).exists()]
        assert written == [], (why, written)  # checked before anything is written


def test_a_report_into_a_new_folder_creates_it(results, tmp_path, capsys):
    assert main(["report", str(results), "-o", str(tmp_path / "new" / "r.html"),
                 "--csv", str(tmp_path / "new" / "deeper" / "runs.csv")]) == 0
    assert (tmp_path / "new" / "r.html").stat().st_size > 0
    assert (tmp_path / "new" / "deeper" / "runs.csv").read_text().startswith(f"{CSV_COLUMNS[0]},")
