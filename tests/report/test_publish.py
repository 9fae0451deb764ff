"""Published reports: the one-line finding and the index page built from the reports' own metadata."""

from __future__ import annotations

import pandas as pd

from lthbench.cli import main
from lthbench.report.publish import finding, report_command, report_metadata, write_index
from lthbench.report.results import read_folder, tidy_frame
from lthbench.report.stats import comparison_table, random_mask_controls, verdicts
from helpers.synthetic_results import write_synthetic_results


class NoSections:
    def report_sections(self, frame, stats):
        return []


def test_finding_counts_levels_per_cell():
    judged = pd.DataFrame([
        {"cell_id": "c1", "experiment": "lenet", "pruner": "lw", "round": r, "weights_remaining": w,
         "comparison": c, "verdict": v}
        for r, w in ((1, 0.8), (2, 0.64))
        for c, v in (("vs dense", "winning ticket" if r == 1 else "not a winning ticket: lower accuracy"),
                     ("vs reinit", "ticket beats reinit"))
    ])
    frame = pd.DataFrame({"cell_id": ["c1", "c2"], "control_of": [None, "lw"]})
    assert finding(judged, frame) == ("lenet · lw (down to 64.0% weights): winning ticket at 1/2 levels, "
                                      "ticket beats reinit at 2/2 levels")
    assert finding(judged.iloc[0:0], frame) == "no comparison could be made"
    # a random-mask control cell is reported through the cell it mimics, not as a cell of its own
    control = judged.assign(cell_id="c2", pruner="random(like=lw)")
    assert finding(pd.concat([judged, control]), frame) == finding(judged, frame)


def test_finding_counts_the_levels_where_the_ticket_beats_its_random_mask(tmp_path):
    frame = tidy_frame([read_folder(write_synthetic_results(tmp_path / "results", random_control="random"))])
    assert ("lenet · layerwise_magnitude (down to 51.3% weights): winning ticket at 3/3 levels, "
            "ticket beats reinit at 2/3 levels, ticket beats random mask at 3/3 levels;") in finding(
        verdicts(comparison_table(frame, random_mask_controls(frame))), frame)


def test_index_lists_each_report_with_its_metadata(tmp_path, capsys):
    results = write_synthetic_results(tmp_path / "results", experiment="<b>x</b>")
    reports = tmp_path / "reports"
    assert report_command([str(results)], str(reports / "synthetic.html"), None, None, NoSections()) == 0
    meta = report_metadata(reports / "synthetic.html")
    assert meta["name"] == "synthetic" and meta["device"] and meta["date"]
    assert "<b>x</b> · layerwise_magnitude" in meta["finding"] and "winning ticket at" in meta["finding"]
    (reports / "notes.html").write_text("<html><title>not a report</title></html>")
    assert main(["index", str(reports)]) == 0
    index = (reports / "index.html").read_text()
    assert 'href="synthetic.html"' in index and "notes.html" not in index
    assert "&lt;b&gt;x&lt;/b&gt;" in index and "<b>x</b>" not in index
    assert write_index(reports) == reports / "index.html"
