"""Reports from stores and names a careless or hostile user made: bad records, `$` in labels, odd report file names."""

from __future__ import annotations

import json
import math
import random
import re
import urllib.parse
from html.parser import HTMLParser


from lthbench.cli import main
from lthbench.report.publish import write_index
from lthbench.report.results import read_folder, tidy_frame
from lthbench import store as store_module
from lthbench.store import Store
from helpers.synthetic_results import write_synthetic_results

#: Values that no field of a record may hold where a number, list or table of numbers belongs.
HOSTILE = [None, "0.9", "", [], {}, [1, "x"], {"a": 1}, True, math.nan, math.inf, -math.inf, -1, 10 ** 40,
           [[1, 2]], {"remaining": "x"}, 1.5]
FIELDS = ["seed", "round", "status", "weights_remaining", "early_stop_iteration", "iterations",
          "early_stop_test_accuracy", "final_test_accuracy", "wall_time", "error", "traceback", "device",
          "layers", "curves"]


def small_results(tmp_path, **options):
    return write_synthetic_results(tmp_path / "results", pruners=("layerwise_magnitude",), rounds=2, **options)


def done_records(results):
    store = Store(results)
    return [(run["run_id"], record) for run in store.matrix()["runs"]
            if (record := store.record(run["run_id"])) and record["status"] == "done" and run["round"] > 0]


def corrupt(record, rng):
    """A copy of ``record`` with one to three fields, or parts of its curves and layers, made hostile."""
    record = json.loads(json.dumps(record))
    for _ in range(rng.randint(1, 3)):
        where = rng.choice(FIELDS + ["curve", "curve length", "layer"])
        if where == "curve":
            curve = rng.choice(sorted(record["curves"]))
            values = record["curves"][curve]
            values[rng.randrange(len(values))] = rng.choice(HOSTILE)
        elif where == "curve length":  # ragged curves
            curve = rng.choice(sorted(record["curves"]))
            record["curves"][curve] = record["curves"][curve][: rng.randrange(len(record["curves"][curve]))]
        elif where == "layer":
            layer = rng.choice(sorted(record["layers"]))
            record["layers"][layer][rng.choice(["remaining", "total"])] = rng.choice(HOSTILE)
        else:
            record[where] = rng.choice(HOSTILE)
    return record


def test_a_record_with_wrong_types_is_reported_as_invalid_and_the_report_goes_on(tmp_path, capsys):
    results = small_results(tmp_path)
    run_id, record = done_records(results)[0]
    Store(results).write_record(run_id, {**record, "early_stop_test_accuracy": "0.97",
                                         "curves": {**record["curves"], "iteration": record["curves"]["iteration"][:3]}})
    assert main(["report", str(results), "-o", str(tmp_path / "report.html")]) == 0
    frame = tidy_frame([read_folder(results)])
    row = frame[frame["run_id"] == run_id].iloc[0]
    assert row["status"] == "failed" and "invalid record" in row["error"] and "early_stop_test_accuracy" in row["error"]
    assert "invalid record" in (tmp_path / "report.html").read_text()


def test_the_record_check_accepts_what_the_engine_writes_and_names_the_bad_field():
    results_record = {"run_id": "a", "status": "done", "seed": 0, "round": 1, "weights_remaining": 0.8,
                      "early_stop_iteration": 20, "iterations": 40, "early_stop_test_accuracy": 0.9,
                      "final_test_accuracy": 0.9, "early_stop_val_loss": 0.3, "start_iteration": 0,
                      "wall_time": 1.0, "device": "cpu", "error": None, "traceback": None,
                      "layers": {"fc1.weight": {"remaining": 8, "total": 10}},
                      "curves": {"iteration": [20, 40], "train_loss": [0.5, math.nan], "val_loss": [0.3, 0.4],
                                 "val_accuracy": [0.9, 0.9], "test_accuracy": [0.9, 0.9]}}
    assert store_module.record_problem(results_record) is None
    assert "weights_remaining" in store_module.record_problem({**results_record, "weights_remaining": math.nan})
    assert "curves" in store_module.record_problem({**results_record, "curves": {"iteration": [20], "test_accuracy": [0.9, 1]}})
    assert "early_stop_test_accuracy" in store_module.record_problem({**results_record, "early_stop_test_accuracy": None})
    failed = {**results_record, "status": "failed", "early_stop_test_accuracy": None, "curves": {}, "layers": {},
              "error": "RuntimeError: boom"}
    assert store_module.record_problem(failed) is None


def test_randomly_corrupted_records_never_crash_the_report(tmp_path):
    results = small_results(tmp_path)
    store = Store(results)
    originals = done_records(results)
    rng = random.Random(12)
    for case in range(6):
        for run_id, record in originals:
            store.write_record(run_id, record)
        victims = rng.sample(originals, 3)
        for run_id, record in victims:
            store.write_record(run_id, corrupt(record, rng))
        out = tmp_path / f"report-{case}.html"
        assert main(["report", str(results), "-o", str(out), "--csv", str(tmp_path / f"{case}.csv")]) == 0, case
        frame = tidy_frame([read_folder(results)])
        for run_id, _ in victims:
            problem = store_module.record_problem(store.record(run_id))
            row = frame[frame["run_id"] == run_id].iloc[0]
            assert problem is None or (row["status"] == "failed" and "invalid record" in row["error"])


def test_dollar_signs_in_labels_and_layer_names_are_drawn_as_written(tmp_path):
    results = small_results(tmp_path)
    store = Store(results)
    matrix = store.matrix()
    labels = {"reinit": "re$init", "original": "$x^2$"}
    for run in matrix["runs"]:
        run["initializer"] = labels.get(run["initializer"], run["initializer"])
        record = store.record(run["run_id"])
        if record is not None:
            record["initializer"] = run["initializer"]
            record["layers"] = {f"$\\alpha${name}": counts for name, counts in record["layers"].items()}
            store.write_record(run["run_id"], record)
    store.write_matrix(matrix)
    assert main(["report", str(results), "-o", str(tmp_path / "report.html")]) == 0
    page = (tmp_path / "report.html").read_text()
    svg_text = " ".join(re.findall(r"<text[^>]*>([^<]*)</text>", page))
    assert "re$init" in svg_text and "$x^2$" in svg_text and "$\\alpha$fc1" in svg_text


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self.hrefs.append(dict(attrs).get("href"))


def published_report(name):
    return (f'<html><head><meta name="lthbench:name" content="{name}"><meta name="lthbench:date" content="2025">'
            '<meta name="lthbench:device" content="cpu">'
            '<meta name="lthbench:finding" content="a finding"></head><body></body></html>')


def index_links(folder):
    links = Links()
    links.feed((folder / "index.html").read_text())
    return links.hrefs


def test_a_report_named_like_a_script_url_is_linked_as_a_file(tmp_path):
    (tmp_path / "javascript:alert(1)+{}.html").write_text(published_report("x"))
    write_index(tmp_path)
    [href] = index_links(tmp_path)
    assert urllib.parse.urlsplit(href).scheme == "" and urllib.parse.unquote(href) == "javascript:alert(1)+{}.html"


NAME_CHARACTERS = ["javascript:", "data:", ":", "/", "\\", '"', "'", "<", ">", "#", "?", "%", "%2F", " ", "&",
                   "+", "{", "}", "é", "\u202e", "..", ".", "a", "b"]


def test_every_index_link_is_relative_and_names_a_report_inside_the_folder(tmp_path):
    reports = tmp_path / "reports"
    reports.mkdir()
    outside = tmp_path / "outside.html"
    outside.write_text(published_report("outside"))
    (reports / "linked.html").symlink_to(outside)
    (reports / "folder.html").mkdir()
    rng = random.Random(17)
    names = set()
    while len(names) < 25:
        name = "".join(rng.choice(NAME_CHARACTERS) for _ in range(rng.randint(1, 6))).replace("/", "")
        if name not in ("", ".", "..") and not name.startswith("index"):
            names.add(name + ".html")
    for name in names:
        (reports / name).write_text(published_report(name))
    write_index(reports)
    hrefs = index_links(reports)
    assert len(hrefs) == len(names)
    for href in hrefs:
        parts = urllib.parse.urlsplit(href)
        assert parts.scheme == "" and parts.netloc == "" and "/" not in parts.path and not parts.query, href
        assert urllib.parse.unquote(parts.path) in names, href
