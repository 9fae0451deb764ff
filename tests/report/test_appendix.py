"""The report's appendix material: per-level summaries, hyperparameters, reference values and figure files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from helpers.synthetic_results import write_synthetic_results

from lthbench.errors import UserError
from lthbench.report.html import hyperparameters, level_summary
from lthbench.report.publish import report_command
from lthbench.report.reference import FRANKLE_2019, comparison_rows, reference_for
from lthbench.report.results import read_folder, tidy_frame


class NoSections:
    def report_sections(self, frame, stats):
        return []


def paper_setting(results: Path) -> Path:
    """Give every cell of a synthetic folder the paper's batch size, the one setting the synthetic cells lack."""
    matrix = json.loads((results / "matrix.json").read_text())
    for cell in matrix["cells"]:
        cell["training"]["batch_size"] = 60
    (results / "matrix.json").write_text(json.dumps(matrix))
    return results


def test_level_summary_gives_mean_sd_min_max_and_n_per_level_and_initializer():
    rows = pd.DataFrame({
        "status": ["done"] * 5 + ["failed"], "round": [0, 0, 1, 1, 1, 1],
        "initializer": ["dense", "dense", "original", "original", "reinit", "original"],
        "weights_remaining": [1.0, 1.0, 0.8, 0.8, 0.8, 0.8],
        "early_stop_test_accuracy": [0.97, 0.99, 0.95, 0.96, 0.90, 0.10],
        "early_stop_iteration": [1000, 1200, 800, 900, 1500, 0],
        "final_test_accuracy": [0.96, 0.98, 0.94, 0.95, 0.9, 0.1],
    })
    summary = level_summary(rows)
    assert [(r["round"], r["initializer"], r["n"]) for r in summary] == [(0, "dense", 2), (1, "original", 2),
                                                                         (1, "reinit", 1)]
    ticket = summary[1]["stats"]
    assert ticket["early_stop_test_accuracy"]["mean"] == pytest.approx(0.955)  # the failed run is left out
    assert ticket["early_stop_test_accuracy"]["sd"] == pytest.approx(pd.Series([0.95, 0.96]).std())
    assert (ticket["early_stop_iteration"]["min"], ticket["early_stop_iteration"]["max"]) == (800, 900)
    assert summary[2]["stats"]["final_test_accuracy"]["sd"] is None  # one run has no spread to show


def test_the_report_has_a_summary_table_per_cell_and_every_setting(tmp_path, capsys):
    results = write_synthetic_results(tmp_path / "results")
    assert report_command([str(results)], str(tmp_path / "r.html"), None, None, NoSections()) == 0
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert html.count('<table class="levels">') == 2
    assert html.count("<th class=\"num\">mean ± SD</th><th class=\"num\">min–max</th>") == 6  # 3 metrics × 2 cells
    rows = hyperparameters([read_folder(results)])
    keys = [row["key"] for row in rows]
    assert {"seeds", "architecture", "rate", "output_rate", "mask_source", "training.lr", "training.eval_every",
            "pruner"} <= set(keys)
    pruner = next(row for row in rows if row["key"] == "pruner")
    assert pruner["value"] is None and [value for _, value in pruner["per_cell"]] == ["layerwise_magnitude",
                                                                                      "global_magnitude"]
    assert next(row for row in rows if row["key"] == "training.lr")["value"] == "0.0012"
    for row in rows:
        assert f'<td class="mono">{row["key"]}</td>' in html


def test_every_default_of_a_real_run_is_listed(tmp_path, capsys, data_root):
    from helpers.tiny_matrix import write_matrix

    from lthbench.cli import main

    path = write_matrix(tmp_path, rounds=1, iterations=20, eval_every=10)
    assert main(["run", str(path), "--data-root", str(data_root), "--quiet"]) == 0
    assert main(["report", str(tmp_path / "out")]) == 0  # the default destination: the results folder
    html = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    for key in ("training.warmup_iterations", "training.lr_schedule", "training.weight_decay", "training.precision",
                "training.validation_size", "training.augment", "output_rate"):  # none is in the file
        assert f'<td class="mono">{key}</td>' in html


def test_the_papers_setting_is_recognised_and_nothing_else():
    cell = {"architecture": "lenet_300_100", "dataset": "mnist", "pruner": "layerwise_magnitude", "mode": "iterative",
            "rate": 0.2, "output_rate": 0.1, "training": {"optimizer": "adam", "lr": 0.0012, "batch_size": 60,
                                                          "iterations": 5000}}
    assert reference_for(cell) is FRANKLE_2019
    assert "trains 5,000 iterations, the paper 50,000" in FRANKLE_2019.length_note(cell)
    for change in ({"pruner": "global_magnitude"}, {"pruner": "layerwise_magnitude(exclude=['fc3.weight'])"},
                   {"dataset": "fashion-mnist"}, {"architecture": "lenet5"}, {"output_rate": 0.2},
                   {"mode": "one_shot"}, {"training": {**cell["training"], "optimizer": "sgd"}},
                   {"training": {**cell["training"], "batch_size": 128}}):
        assert reference_for({**cell, **change}) is None, change


def test_published_values_stand_beside_ours_at_the_same_level(tmp_path, capsys):
    results = paper_setting(write_synthetic_results(tmp_path / "results"))
    frame = tidy_frame([read_folder(results)])
    cell = next(c for c in read_folder(results).matrix["cells"] if c["pruner"] == "layerwise_magnitude")
    rows = comparison_rows(FRANKLE_2019, cell, frame[frame["cell_id"] == cell["cell_id"]])
    by_level = {(round(r["weights_remaining"], 3), r["metric"]): r for r in rows}
    ours = frame[(frame["cell_id"] == cell["cell_id"]) & (frame["round"] == 3) & (frame["status"] == "done")]
    ticket = ours[ours["initializer"] == "original"]
    assert by_level[(0.513, "early_stop_test_accuracy")]["ours"] == pytest.approx(
        ticket["early_stop_test_accuracy"].mean())
    assert by_level[(0.513, "early_stop_test_accuracy")]["value"] == pytest.approx(0.981)
    dense = frame[(frame["cell_id"] == cell["cell_id"]) & (frame["round"] == 0)]
    assert by_level[(1.0, "early_stop_iteration")]["ours"] == pytest.approx(dense["early_stop_iteration"].mean())
    assert by_level[(0.211, "early_stop_test_accuracy")]["ours"] is None  # a level these runs never reached


def test_the_report_draws_and_cites_the_reference_only_where_the_setting_matches(tmp_path, capsys):
    results = write_synthetic_results(tmp_path / "plain")
    assert report_command([str(results)], str(tmp_path / "plain.html"), None, None, NoSections()) == 0
    plain = (tmp_path / "plain.html").read_text(encoding="utf-8")
    assert "Frankle &amp; Carbin 2019 (ticket)" not in plain and '<table class="reference">' not in plain
    results = paper_setting(write_synthetic_results(tmp_path / "paper"))
    assert report_command([str(results)], str(tmp_path / "paper.html"), None, None, NoSections()) == 0
    html = (tmp_path / "paper.html").read_text(encoding="utf-8")
    assert html.count('<table class="reference">') == 1  # the layerwise cell; the global one is another setting
    # in the legends of the accuracy and the early-stop figure
    assert html.count(">Frankle &amp; Carbin 2019 (ticket)</text>") == 2
    assert "The Lottery Ticket Hypothesis: Finding Sparse, Trainable Neural Networks. ICLR 2019" in html
    assert "read off the figure (about +-2 px)" in html  # each value keeps its provenance


def test_figures_are_written_as_svg_png_and_pdf_with_stable_names(tmp_path, capsys):
    results = write_synthetic_results(tmp_path / "results")
    figures = tmp_path / "figures"
    assert report_command([str(results)], None, None, None, NoSections(), figures=str(figures)) == 0
    assert (results / "report.html").is_file()
    names = sorted(path.name for path in figures.iterdir())
    stems = sorted({name.rsplit(".", 1)[0] for name in names})
    assert stems == sorted(f"lenet_{pruner}-{kind}" for pruner in ("layerwise_magnitude", "global_magnitude")
                           for kind in ("accuracy", "early-stop", "differences", "curves", "layers"))
    assert len(names) == 3 * len(stems)
    for stem in stems:
        assert (figures / f"{stem}.svg").read_text().lstrip().startswith(("<?xml", "<svg"))
        assert (figures / f"{stem}.png").read_bytes().startswith(b"\x89PNG")
        assert (figures / f"{stem}.pdf").read_bytes().startswith(b"%PDF")
    first = (figures / f"{stems[0]}.svg").read_bytes()
    assert report_command([str(results)], None, None, None, NoSections(), figures=str(figures)) == 0
    assert (figures / f"{stems[0]}.svg").read_bytes() == first  # the same results give the same files


def test_a_figures_folder_that_cannot_be_written_is_refused_before_anything_is_written(tmp_path):
    results = write_synthetic_results(tmp_path / "results")
    (tmp_path / "a-file").write_text("x")
    for bad, message in ((tmp_path / "a-file", "is a file, not a folder"),
                         (tmp_path / "a-file" / "sub", "cannot be written")):
        with pytest.raises(UserError, match=f"--figures {bad}: {message}"):
            report_command([str(results)], str(tmp_path / "r.html"), None, None, NoSections(), figures=str(bad))
        assert not (tmp_path / "r.html").exists()


def test_cells_that_share_experiment_and_pruner_get_figure_files_of_their_own(tmp_path, capsys, data_root):
    from helpers.tiny_matrix import write_matrix

    from lthbench.cli import main

    path = write_matrix(tmp_path, rounds=1, iterations=20, eval_every=10, seeds=(0,))
    path.write_text(path.read_text() + "[experiment.training]\nlr = [1.2e-3, 3e-3]\n")
    assert main(["run", str(path), "--data-root", str(data_root), "--quiet"]) == 0
    figures = tmp_path / "figures"
    assert main(["report", str(tmp_path / "out"), "--figures", str(figures)]) == 0
    stems = {re.sub(r"-(accuracy|early-stop|differences|curves|layers)$", "", p.stem) for p in figures.iterdir()}
    assert stems == {"lenet_layerwise_magnitude_lr-0.0012", "lenet_layerwise_magnitude_lr-0.003"}


def test_runs_stopped_by_patience_are_counted_beside_the_early_stop_iteration(tmp_path):
    results = write_synthetic_results(tmp_path / "results")
    stopped = sorted(results.glob("runs/*/record.json"))[:3]
    for path in stopped:
        record = json.loads(path.read_text())
        record["stopped_early"], record["stopped_at"] = True, record["early_stop_iteration"] + 400
        path.write_text(json.dumps(record))
    assert report_command([str(results)], str(tmp_path / "r.html"), None, None, NoSections()) == 0
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<strong>Stopped early.</strong>" in html
    marks = [int(n) for n in re.findall(r'<span class="note">(\d+) of \d+ stopped early</span>', html)]
    assert sum(marks) == len(stopped)  # each stopped run marked once, in its level and initializer's row
    summary = level_summary(tidy_frame([read_folder(results)]))
    assert sum(row["stopped"] for row in summary) == len(stopped)


def test_a_report_without_stopped_runs_says_nothing_of_patience(tmp_path):
    results = write_synthetic_results(tmp_path / "results")
    assert report_command([str(results)], str(tmp_path / "r.html"), None, None, NoSections()) == 0
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "Stopped early." not in html and "stopped early</span>" not in html
