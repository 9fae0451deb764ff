"""The report: loading result folders, the HTML file, the CSV exports and a real browser's view of it."""

from __future__ import annotations

import base64
import json
import os
import re
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from helpers.synthetic_results import FAILURE, write_synthetic_results

from lthbench.errors import UserError
from lthbench.report.figures import figure_set, metric_figure
from lthbench.report.html import (censoring_note, format_difference, format_margin, format_p, format_value,
                                  verdict_class, verdict_summary)
from lthbench.report.publish import report_command
from lthbench.report.results import read_folder, tidy_frame
from lthbench.report.stats import ACCURACY, ITERATION, VERDICTS

INJECTED = "lenet <script>document.title='pwned'</script>"
CHROMIUM = "/usr/bin/chromium"
REQUIRED_CSV = [
    "experiment", "architecture", "dataset", "pruner", "initializer", "seed", "round", "weights_remaining",
    "early_stop_iteration", "early_stop_test_accuracy", "final_test_accuracy", "status",
]
#: The contract of ``lthbench report --stats-csv``: these columns first, in this order.
STATS_CSV_CONTRACT = [
    "cell_id", "experiment", "architecture", "dataset", "training", "pruner", "round", "weights_remaining", "metric",
    "group_a", "group_b", "scope", "n_a", "n_b", "mean_a", "mean_b", "diff", "ci_low", "ci_high", "adjustment",
    "p_value", "p_adjusted", "margin", "tost_p", "verdict", "detectable_difference", "seeds_needed", "note",
]
GOLDEN_STORE = Path(__file__).parents[1] / "golden" / "store"


class SectionPlugin:
    """Stands in for the registry: one extra section from a plugin."""

    def report_sections(self, frame: pd.DataFrame, stats: pd.DataFrame) -> list[dict[str, str]]:
        return [{"title": "Seeds <by plugin>", "html": f"<p class='from-plugin'>{len(frame)} rows</p>"}]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("report")
    results = write_synthetic_results(root / "results", experiment=INJECTED)
    paths = {name: root / name for name in ("report.html", "runs.csv", "stats.csv")}
    code = report_command([str(results)], str(paths["report.html"]), str(paths["runs.csv"]),
                          str(paths["stats.csv"]), SectionPlugin())
    return {"code": code, "results": results, "html": paths["report.html"].read_text(encoding="utf-8"), **paths}


# ---------------------------------------------------------------- loading

def load_results(paths: list) -> pd.DataFrame:
    """The tidy frame of result folders, as ``lthbench report`` reads them."""
    return tidy_frame([read_folder(path) for path in paths])


def test_dense_run_appears_under_every_cell_that_uses_it(report):
    frame = load_results([report["results"]])
    dense = frame[frame["initializer"] == "dense"]
    assert len(dense) == 6 and dense["run_id"].nunique() == 3
    assert set(dense["pruner"]) == {"layerwise_magnitude", "global_magnitude"}


def test_runs_without_record_are_blocked_by_a_failed_ancestor_or_pending(report):
    frame = load_results([report["results"]])
    failed = frame[frame["status"] == "failed"]
    blocked = frame[frame["status"] == "blocked"]
    assert len(failed) == 1 and failed["error"].item() == FAILURE
    assert len(blocked) == 2 and set(blocked["round"]) == {3}
    assert all(failed["run_id"].item() in error for error in blocked["error"])
    assert (frame["status"] == "pending").sum() == 1


def test_the_same_folder_twice_counts_each_run_once(report):
    assert len(load_results([report["results"], report["results"]])) == len(load_results([report["results"]]))


def test_missing_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no such folder"):
        load_results([tmp_path / "nowhere"])


def test_folder_without_matrix_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match=r"no matrix\.json; is this an lthbench output folder\?"):
        load_results([tmp_path])


def test_corrupt_matrix_is_a_user_error(tmp_path):
    (tmp_path / "matrix.json").write_text("{not json")
    with pytest.raises(UserError, match="corrupt"):
        load_results([tmp_path])


def test_no_folder_is_a_user_error():
    with pytest.raises(UserError, match="no results folder"):
        report_command([], "x.html", None, None, SectionPlugin())


# ---------------------------------------------------------------- the HTML file

def test_report_is_written_and_the_command_succeeds(report, capsys):
    assert report["code"] == 0
    assert report["report.html"].stat().st_size > 10_000
    assert report["html"].startswith("<!DOCTYPE html>")


def test_report_loads_no_external_resource(report):
    html = report["html"]
    assert not re.search(r"""(src|href|action|poster)\s*=\s*["']?\s*(https?:)?//""", html, re.IGNORECASE)
    assert not re.search(r"""url\(\s*["']?(?!#)""", html)  # only in-document references like url(#clip)
    assert not re.search(r"@import|<link\b|<iframe\b|<img\b|<script\b", html, re.IGNORECASE)


def test_user_text_is_escaped(report):
    html = report["html"]
    assert "lenet &lt;script&gt;document.title=&#39;pwned&#39;&lt;/script&gt;" in html
    assert "<script" not in html.lower()


def test_failed_run_is_listed_with_its_error_and_traceback(report):
    html = report["html"]
    assert "RuntimeError: CUDA out of memory &lt;while pruning &amp; rewinding&gt;" in html
    assert "<details><summary>traceback</summary><pre>Traceback (most recent call last):" in html
    assert "2 blocked runs" in html


def test_plugin_section_html_is_inserted_and_its_title_escaped(report):
    assert "<p class='from-plugin'>42 rows</p>" in report["html"]
    assert "Seeds &lt;by plugin&gt;" in report["html"]


def test_report_shows_verdicts_and_figures(report):
    html = report["html"]
    assert '<span class="verdict good">better</span>' in html and '<span class="verdict good">winning ticket</span>' in html
    assert "no difference" not in html
    assert html.count("<svg") == 10  # five figures for each of the two cells


def test_every_verdict_in_the_html_shows_the_numbers_of_the_stats_csv(report):
    """Table 1 and the overall lines print each verdict with the difference and interval of its CSV row."""
    html = report["html"]
    stats = pd.read_csv(report["stats.csv"], keep_default_na=False, na_values=[""])
    assert len(stats) > 0
    for row in stats.to_dict("records"):
        summary = verdict_summary(row)
        shown = (f'<span class="verdict {verdict_class(row["verdict"])}">{row["verdict"]}</span><br>'
                 f'<span class="num">{summary["text"]}</span>')
        if row["scope"] == "overall":
            shown = f'<span class="verdict {verdict_class(row["verdict"])}">{row["verdict"]}</span>, {summary["text"]}'
        assert shown in html, row
        if not pd.isna(row["ci_low"]):
            assert f'{format_difference(row["ci_low"], row["metric"])}, ' in summary["text"]
            assert summary["method"] in html


def test_report_shows_the_random_mask_control_in_the_reference_cell(tmp_path, capsys):
    results = write_synthetic_results(tmp_path / "results", random_control="random")
    assert report_command([str(results)], str(tmp_path / "r.html"), None, None, SectionPlugin()) == 0
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert html.count('<th colspan="2">Ticket vs random mask</th>') == 1  # the layerwise_magnitude cell only
    assert html.count("<td>random mask</td>") == 8  # three levels and the overall row in each metric's table
    assert html.count("<svg") == 15
    assert html.count(">random mask</text>") == 2  # legend of its accuracy and early-stop figures
    assert html.count(">vs random mask</text>") == 1  # legend of the differences figure
    # the random cell is a control: its table has no winning-ticket column, the two others have one
    assert html.count("<th rowspan=\"2\">Winning ticket</th>") == 2
    assert "a control cell (no winning-ticket mark)" in html


def test_runs_still_improving_at_the_end_are_flagged_as_censored(tmp_path):
    results = write_synthetic_results(tmp_path / "results")
    assert report_command([str(results)], str(tmp_path / "plain.html"), None, None, SectionPlugin()) == 0
    assert "Early stopping not reached" not in (tmp_path / "plain.html").read_text(encoding="utf-8")
    for path in results.glob("runs/*/record.json"):
        record = json.loads(path.read_text())
        if record["round"] == 0:  # the dense runs' validation loss was lowest at their last evaluation
            path.write_text(json.dumps({**record, "iterations": record["early_stop_iteration"]}))
    assert report_command([str(results)], str(tmp_path / "censored.html"), None, None, SectionPlugin()) == 0
    html = (tmp_path / "censored.html").read_text(encoding="utf-8")
    assert html.count("Early stopping not reached") == 2  # one warning per cell
    assert len(re.findall(r"3 of 3 dense runs and 0 of 1[57] pruned runs had their lowest validation loss", html)) == 2


def test_censoring_counts_done_runs_that_stopped_at_their_last_iteration():
    frame = pd.DataFrame({"status": ["done", "done", "done", "failed"], "round": [0, 1, 1, 1],
                          "early_stop_iteration": [2000, 2000, 1600, None], "iterations": [2000, 2000, 2000, 2000]})
    assert censoring_note(frame).startswith("1 of 1 dense runs and 1 of 2 pruned runs had their lowest")
    assert censoring_note(frame.assign(iterations=4000)) == ""


@pytest.mark.parametrize(
    ("text", "expected"),
    [(format_p(0.0031), "0.003"), (format_p(0.0004), "<0.001"), (format_p(float("nan")), "–"),
     (format_value(0.97126, ACCURACY), "97.13"), (format_value(2450.0, ITERATION), "2450")],
)
def test_numbers_are_formatted_for_tables(text, expected):
    assert text == expected


def test_svg_figures_escape_their_text_and_are_deterministic():
    rows = pd.DataFrame({
        "initializer": ["dense", "<script>x</script>", "<script>x</script>"],
        "round": [0, 1, 2], "seed": 0, "weights_remaining": [1.0, 0.8, 0.64], ACCURACY: [0.97, 0.96, 0.95],
    })
    svg = metric_figure(rows, ACCURACY, "escape-test").svg
    assert svg.startswith("<svg") and "<?xml" not in svg and "http://www.w3.org/Graphics" not in svg
    assert "&lt;script&gt;x&lt;/script&gt;" in svg and "<script" not in svg
    assert metric_figure(rows, ACCURACY, "escape-test").svg == svg


def test_report_of_a_folder_with_nothing_done_still_renders(tmp_path, capsys):
    results = write_synthetic_results(tmp_path / "results")
    shutil.rmtree(results / "runs")
    assert report_command([str(results)], str(tmp_path / "r.html"), None, None, SectionPlugin()) == 0
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "No verdicts yet" in html and "<svg" not in html
    assert "0 done, 0 failed, 0 diverged, 0 blocked, 39 pending runs" in capsys.readouterr().out


# ---------------------------------------------------------------- CSV exports

def test_csv_has_the_documented_columns(report):
    runs = pd.read_csv(report["runs.csv"])
    assert set(REQUIRED_CSV) <= set(runs.columns)
    assert len(runs) == 42  # 2 cells x 3 seeds x (dense + 3 rounds x 2 initializers)


def test_stats_csv_has_the_contracts_columns_and_vocabulary(report):
    stats = pd.read_csv(report["stats.csv"])
    assert list(stats.columns[:len(STATS_CSV_CONTRACT)]) == STATS_CSV_CONTRACT
    assert set(stats["metric"]) == {"early_stop_test_accuracy", "early_stop_iteration"}
    assert set(stats["scope"]) == {"level", "overall"} and set(stats["group_a"]) == {"original"}
    assert set(stats["group_b"]) == {"reinit", "dense"}
    assert set(stats["verdict"]) <= set(VERDICTS)
    overall = stats[stats["scope"] == "overall"]
    assert len(overall) == 2 * 2 * 2 and overall["round"].isna().all()  # cells x comparisons x metrics


def test_a_store_of_the_previous_release_is_still_reported(tmp_path, capsys):
    store = shutil.copytree(GOLDEN_STORE, tmp_path / "store")
    assert report_command([str(store)], str(tmp_path / "r.html"), None, str(tmp_path / "s.csv"), SectionPlugin()) == 0
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    stats = pd.read_csv(tmp_path / "s.csv")
    assert set(stats["verdict"]) == {"not enough seeds"}  # two seeds
    assert html.count('<span class="verdict muted">not enough seeds</span>') >= len(stats)


def test_the_report_reads_its_margins_from_the_benchmark_files_report_table(tmp_path, capsys):
    results = write_synthetic_results(tmp_path / "results")
    matrix = json.loads((results / "matrix.json").read_text())
    matrix["config"]["report"] = {"accuracy_margin": 0.02, "iteration_margin": 300}
    (results / "matrix.json").write_text(json.dumps(matrix))
    assert report_command([str(results)], str(tmp_path / "r.html"), None, str(tmp_path / "s.csv"), SectionPlugin()) == 0
    stats = pd.read_csv(tmp_path / "s.csv")
    assert set(stats.loc[stats["metric"] == "early_stop_test_accuracy", "margin"]) == {0.02}
    assert set(stats.loc[stats["metric"] == "early_stop_iteration", "margin"]) == {300}
    assert "accuracy ±2.00 pt, early stop ±300 iterations" in (tmp_path / "r.html").read_text(encoding="utf-8")


def test_a_bad_report_table_in_the_stored_config_is_one_user_error(tmp_path):
    results = write_synthetic_results(tmp_path / "results")
    matrix = json.loads((results / "matrix.json").read_text())
    matrix["config"]["report"] = {"accuracy_margin": 5}
    (results / "matrix.json").write_text(json.dumps(matrix))
    with pytest.raises(UserError, match=r"matrix\.json: report: accuracy_margin = 5.0 is not allowed; it must be a "
                                        r"fraction in \(0, 1\)"):
        report_command([str(results)], str(tmp_path / "r.html"), None, None, SectionPlugin())
    assert not (tmp_path / "r.html").exists()


def test_the_report_prints_what_inconclusive_verdicts_would_need(tmp_path, capsys):
    results = write_synthetic_results(tmp_path / "results", seeds=(0, 1, 2, 3))
    assert report_command([str(results)], str(tmp_path / "r.html"), None, str(tmp_path / "s.csv"), SectionPlugin()) == 0
    stats = pd.read_csv(tmp_path / "s.csv")
    out = capsys.readouterr().out
    inconclusive = stats[stats["verdict"] == "inconclusive"]
    assert len(inconclusive) and inconclusive["seeds_needed"].notna().all()
    levels = (inconclusive["scope"] == "level").sum()
    assert f"{levels} per-level verdicts are inconclusive" in out if levels else "per-level" not in out
    for row in inconclusive[inconclusive["scope"] == "overall"].to_dict("records"):
        assert f"would detect {format_margin(row['margin'], row['metric'])}" in out


# ---------------------------------------------------------------- a real browser

BROWSER_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed")


class DevToolsPipe:
    """A minimal Chrome DevTools Protocol client over ``--remote-debugging-pipe``.

    Chromium reads NUL-terminated JSON messages from fd 3 and writes to fd 4;
    no websocket client (and no extra dependency) is needed.
    """

    def __init__(self, profile: Path):
        to_chrome, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome = os.pipe()

        def wire_fds() -> None:
            # Copy both ends above 4 first: either may itself be fd 3 or 4.
            reading, writing = os.dup(to_chrome), os.dup(from_chrome)
            os.dup2(reading, 3)
            os.dup2(writing, 4)

        self.process = subprocess.Popen(
            [CHROMIUM, *BROWSER_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"],
            preexec_fn=wire_fds, close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        os.close(to_chrome)
        os.close(from_chrome)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        """Send one command and wait for its result, keeping the events that arrive meanwhile."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive()
            if reply.get("id") == self._next_id:
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 20) -> None:
        """Read events until one called ``method`` arrives."""
        deadline = time.monotonic() + timeout
        while not any(event.get("method") == method for event in self.events):
            self.events.append(self._receive(deadline - time.monotonic()))

    def _receive(self, timeout: float = 20) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._from_chrome], [], [], max(timeout, 0))
            chunk = os.read(self._from_chrome, 1 << 16) if ready else b""
            if not chunk:
                raise TimeoutError("chromium sent nothing")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def close(self) -> None:
        """Close the browser and the pipes."""
        self.process.kill()
        self.process.wait()
        os.close(self._to_chrome)
        os.close(self._from_chrome)


def _errors(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Uncaught exceptions, console errors and browser log errors among DevTools events."""
    return [
        event for event in events
        if event.get("method") == "Runtime.exceptionThrown"
        or (event.get("method") == "Runtime.consoleAPICalled" and event["params"]["type"] == "error")
        or (event.get("method") == "Log.entryAdded" and event["params"]["entry"]["level"] == "error")
    ]


@needs_chromium
def test_browser_renders_the_report_without_requests_errors_or_script(report, tmp_path):
    url = report["report.html"].resolve().as_uri()
    browser = DevToolsPipe(tmp_path / "profile")
    try:
        target = browser.call("Target.createTarget", url="about:blank")["targetId"]
        session = browser.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Network", "Runtime", "Log", "Page"):
            browser.call(f"{domain}.enable", session)
        browser.call("Page.navigate", session, url=url)
        browser.wait_for("Page.loadEventFired")
        title = browser.call("Runtime.evaluate", session, expression="document.title")["result"]["value"]
        heading = browser.call("Runtime.evaluate", session, expression="document.querySelector('h3').textContent")
    finally:
        browser.close()
    requests = [e for e in browser.events if e.get("method") == "Network.requestWillBeSent"]
    requested = {request["params"]["request"]["url"] for request in requests}
    assert requested == {url}
    assert _errors(browser.events) == []
    assert title == "synthetic: lottery-ticket benchmark report"
    assert INJECTED in heading["result"]["value"]  # shown as text, not run


@needs_chromium
def test_browser_screenshot_and_dom(report, tmp_path):
    url = report["report.html"].resolve().as_uri()
    flags = [CHROMIUM, *BROWSER_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    screenshot = report["report.html"].with_suffix(".png")
    subprocess.run([*flags, f"--screenshot={screenshot}", "--window-size=1200,3000", url],
                   check=True, capture_output=True, timeout=60)
    dom = subprocess.run([*flags, "--dump-dom", url], check=True, capture_output=True, text=True, timeout=60).stdout
    assert screenshot.stat().st_size > 10_000
    assert "&lt;script&gt;document.title='pwned'&lt;/script&gt;" in dom
    assert re.search(r"<title>(.*?)</title>", dom).group(1) == "synthetic: lottery-ticket benchmark report"


#: Reads, after the page has laid out, how wide each table wrapper's content is against the wrapper, each summary
#: card's content against the card, and the page's against the window (details opened first, so nothing hides).
LAYOUT_PROBE = """(() => {
  document.querySelectorAll('details').forEach(d => { d.open = true; });
  const page = document.documentElement;
  const tables = [...document.querySelectorAll('.table-wrap')].map(wrap => ({
    caption: (wrap.querySelector('caption') || wrap).textContent.trim().slice(0, 60),
    scroll: wrap.scrollWidth, client: wrap.clientWidth,
    right: wrap.querySelector('table').getBoundingClientRect().right}));
  const cards = [...document.querySelectorAll('.card')].map(card => ({
    text: card.textContent.trim(), scroll: card.scrollWidth, client: card.clientWidth}));
  return JSON.stringify({tables, cards, page: {scroll: page.scrollWidth, client: page.clientWidth}});
})()"""
#: The printable width of an A4 page with 10 mm margins, in CSS pixels (96 per inch).
A4_PRINT_WIDTH = round((210 - 20) / 25.4 * 96)


def _overflows(layout: dict[str, Any]) -> list[dict[str, Any]]:
    """Every table wrapper or card whose content is wider than itself, and the page if it is wider than the window."""
    wide = [box for box in layout["tables"] + layout["cards"] if box["scroll"] > box["client"] + 1]
    wide += [box for box in layout["tables"] if box["right"] > layout["page"]["client"] + 1]
    page = layout["page"]
    return wide + ([{"page": page}] if page["scroll"] > page["client"] + 1 else [])


@pytest.fixture(scope="module")
def wide_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A report with the widest tables the synthetic results give: three comparisons, a failed run, a long duration."""
    root = tmp_path_factory.mktemp("wide")
    results = write_synthetic_results(root / "results", random_control="random", experiment=INJECTED)
    for path in results.glob("runs/*/record.json"):  # hours of training: the longest duration text of the cards
        record = json.loads(path.read_text())
        path.write_text(json.dumps({**record, "wall_time": 7000.0}))
    assert report_command([str(results)], str(root / "report.html"), None, None, SectionPlugin()) == 0
    return root / "report.html"


@needs_chromium
def test_no_table_or_card_overflows_at_1280_px_on_screen_or_in_print(wide_report, tmp_path):
    browser = DevToolsPipe(tmp_path / "profile")
    try:
        target = browser.call("Target.createTarget", url="about:blank")["targetId"]
        session = browser.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        browser.call("Page.enable", session)
        browser.call("Emulation.setDeviceMetricsOverride", session, width=1280, height=900, deviceScaleFactor=1,
                     mobile=False)
        browser.call("Page.navigate", session, url=wide_report.resolve().as_uri())
        browser.wait_for("Page.loadEventFired")
        screen = json.loads(browser.call("Runtime.evaluate", session, expression=LAYOUT_PROBE)["result"]["value"])
        shot = browser.call("Page.captureScreenshot", session, format="png", captureBeyondViewport=True)["data"]
        browser.call("Emulation.setEmulatedMedia", session, media="print")
        browser.call("Emulation.setDeviceMetricsOverride", session, width=A4_PRINT_WIDTH, height=1000,
                     deviceScaleFactor=1, mobile=False)
        printed = json.loads(browser.call("Runtime.evaluate", session, expression=LAYOUT_PROBE)["result"]["value"])
        pdf = browser.call("Page.printToPDF", session, paperWidth=210 / 25.4, paperHeight=297 / 25.4,
                           marginTop=0.4, marginBottom=0.4, marginLeft=0.4, marginRight=0.4)["data"]
    finally:
        browser.close()
    (tmp_path / "report-1280.png").write_bytes(base64.b64decode(shot))
    assert (tmp_path / "report-1280.png").stat().st_size > 50_000
    assert base64.b64decode(pdf).startswith(b"%PDF")
    # the window's width, less a vertical scroll bar
    assert 1280 - 20 <= screen["page"]["client"] <= 1280
    assert A4_PRINT_WIDTH - 20 <= printed["page"]["client"] <= A4_PRINT_WIDTH
    assert len(screen["tables"]) >= 12 and len(screen["cards"]) == 7  # every table of the report is measured
    assert any(re.match(r"\d{3} h \d\d min", card["text"]) for card in screen["cards"])
    assert _overflows(screen) == []
    assert _overflows(printed) == []


def test_legends_stand_clear_of_the_axes(report):
    frame = load_results([report["results"]])
    folder = read_folder(report["results"])
    rows = frame[frame["cell_id"] == frame["cell_id"].iloc[0]]
    for figure in figure_set(rows, folder.records, "legend-test"):
        drawn = figure.figure
        drawn.draw_without_rendering()
        assert drawn.legends, figure.kind
        for axis in drawn.axes:
            assert axis.get_legend() is None
            for legend in drawn.legends:
                assert not legend.get_window_extent().overlaps(axis.get_window_extent()), figure.kind
