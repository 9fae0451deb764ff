"""Published reports: the one-line finding and the index page built from the reports' own metadata."""

from __future__ import annotations

import pandas as pd

from lthbench.cli import main
from lthbench.report.html import format_difference
from lthbench.report.publish import finding, report_command, report_metadata, write_index
from lthbench.report.results import RESULT_COLUMNS, read_folder, tidy_frame
from lthbench.report.stats import comparison_table, random_mask_controls, winning_tickets
from helpers.synthetic_results import write_synthetic_results
from helpers.tiny_matrix import write_matrix


class NoSections:
    def report_sections(self, frame, stats):
        return []


def _synthetic_table(tmp_path, **options):
    frame = tidy_frame([read_folder(write_synthetic_results(tmp_path / "results", **options))])
    table = comparison_table(frame, random_mask_controls(frame))
    return table, winning_tickets(table)


def test_finding_states_each_cells_overall_verdicts_and_winning_levels(tmp_path):
    table, winners = _synthetic_table(tmp_path, random_control="random")
    text = finding(table, winners)
    overall = table[(table["scope"] == "overall") & (table["pruner"] == "layerwise_magnitude")]
    accuracy = overall[overall["metric"] == "early_stop_test_accuracy"].set_index("group_b")
    marks = winners[(winners["scope"] == "level") & (winners["cell_id"] == accuracy["cell_id"].iloc[0])]
    assert text.startswith("lenet · layerwise_magnitude (80–51.3% weights): vs reinit: accuracy ")
    assert (f"vs random mask: accuracy {accuracy.loc['random mask', 'verdict']} "
            f"({format_difference(accuracy.loc['random mask', 'diff'], 'early_stop_test_accuracy')} pt)") in text
    assert f"winning ticket at {int(marks['winning_ticket'].sum())}/3 levels" in text
    assert "lenet · global_magnitude (80–51.3% weights)" in text
    assert "random (" not in text  # the control cell speaks through the cell it controls
    assert "no difference" not in text


def test_finding_without_comparisons():
    assert finding(comparison_table(pd.DataFrame(columns=[*RESULT_COLUMNS]), {}),
                   winning_tickets(comparison_table(pd.DataFrame(columns=[*RESULT_COLUMNS]), {}))) == (
        "no comparison could be made")


def test_index_lists_each_report_with_its_metadata(tmp_path, capsys):
    results = write_synthetic_results(tmp_path / "results", experiment="<b>x</b>")
    reports = tmp_path / "reports"
    assert report_command([str(results)], str(reports / "synthetic.html"), None, None, NoSections()) == 0
    meta = report_metadata(reports / "synthetic.html")
    assert meta["name"] == "synthetic" and meta["device"] and meta["date"]
    assert "<b>x</b> · layerwise_magnitude" in meta["finding"] and "winning ticket at" in meta["finding"]
    assert "vs reinit: accuracy" in meta["finding"]
    (reports / "notes.html").write_text("<html><title>not a report</title></html>")
    assert main(["index", str(reports)]) == 0
    index = (reports / "index.html").read_text()
    assert 'href="synthetic.html"' in index and "notes.html" not in index
    assert "&lt;b&gt;x&lt;/b&gt;" in index and "<b>x</b>" not in index
    assert write_index(reports) == reports / "index.html"


def test_status_prints_what_inconclusive_verdicts_would_need(tmp_path, capsys):
    results = write_synthetic_results(tmp_path / "results", seeds=(0, 1, 2, 3))
    path = write_matrix(tmp_path, output=results)
    assert main(["status", str(path)]) == 0
    out = capsys.readouterr().out
    table = comparison_table(tidy_frame([read_folder(results)]), {})
    levels = int(((table["scope"] == "level") & (table["verdict"] == "inconclusive")).sum())
    assert levels and f"{levels} per-level verdicts are inconclusive" in out
    (tmp_path / "fresh").mkdir()
    assert main(["status", str(write_matrix(tmp_path / "fresh"))]) == 0
    assert "inconclusive" not in capsys.readouterr().out  # nothing has run there yet
