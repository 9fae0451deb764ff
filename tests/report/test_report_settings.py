"""The ``[report]`` table of a benchmark file: its defaults, its checks and the one-sentence errors."""

from __future__ import annotations

import pytest
from helpers.tiny_matrix import write_matrix

from lthbench.cli import main
from lthbench.config.parse import load_benchmark, parse_report
from lthbench.config.settings import Report
from lthbench.errors import ConfigError


def _with_report(tmp_path, table: str):
    path = write_matrix(tmp_path)
    path.write_text(path.read_text() + "\n[report]\n" + table + "\n")
    return path


def test_a_file_without_report_table_gets_the_defaults(tmp_path, registry):
    benchmark = load_benchmark(write_matrix(tmp_path), registry)
    assert benchmark.report == Report(accuracy_margin=0.005, iteration_margin=None,
                                      overall_weights_remaining=(0.0, 1.0))


def test_the_report_table_is_read(tmp_path, registry):
    path = _with_report(tmp_path, "accuracy_margin = 0.01\niteration_margin = 500\n"
                                  "overall_weights_remaining = [0.2, 0.35]")
    assert load_benchmark(path, registry).report == Report(0.01, 500, (0.2, 0.35))


@pytest.mark.parametrize(("table", "message"), [
    ("accuracy_margin = 0.5e1", r"report: accuracy_margin = 5\.0 is not allowed; it must be a fraction in \(0, 1\)"),
    ("iteration_margin = 0", r"report: iteration_margin = 0 is not allowed; it must be a positive number of iterations"),
    ("iteration_margin = 2.5", r"report\.iteration_margin: 2\.5 has the wrong type; expected int"),
    ("overall_weights_remaining = [0.5, 0.2]", r"report: overall_weights_remaining = \(0\.5, 0\.2\) is not allowed"),
    ("overall_weights_remaining = [0.5]", r"report\.overall_weights_remaining: \[0\.5\] must have 2 items"),
    ("accuracy_margins = 0.01", r"report\.accuracy_margins: unknown key \(did you mean 'accuracy_margin'\?\)"),
])
def test_a_bad_report_table_is_one_error_naming_file_and_key(tmp_path, registry, table, message):
    path = _with_report(tmp_path, table)
    with pytest.raises(ConfigError, match=rf"^{path}: {message}"):
        load_benchmark(path, registry)


def test_validate_exits_2_with_one_sentence_on_a_bad_report_table(tmp_path, capsys):
    path = _with_report(tmp_path, "accuracy_margin = -1")
    assert main(["validate", str(path)]) == 2
    captured = capsys.readouterr()
    assert "report: accuracy_margin = -1.0 is not allowed" in captured.err + captured.out
    assert "Traceback" not in captured.err + captured.out


def test_parse_report_of_a_stored_config_names_its_file(tmp_path):
    assert parse_report({}, tmp_path / "matrix.json") == Report()
    with pytest.raises(ConfigError, match=r"matrix\.json: report: .* has the wrong type; expected a table"):
        parse_report(0.01, tmp_path / "matrix.json")
