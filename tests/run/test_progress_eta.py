"""The time left of a matrix and the run counter of ``lthbench run``'s display."""

from __future__ import annotations

from rich.console import Console

from lthbench.run.progress import Eta, PlainDisplay
from lthbench.run.worker import Outcome


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_time_left_is_iterations_left_over_the_speed_measured_since_the_start():
    clock = FakeClock()
    eta = Eta(clock)
    assert eta.seconds_left(4) is None
    eta.progress("a", 0, 1000)
    eta.progress("b", 0, 1000)
    clock.now = 10.0
    eta.progress("a", 500, 1000)
    eta.progress("b", 500, 1000)  # 1000 iterations in 10 s, both runs together
    # in flight: 500 + 500 left; two runs waiting of the mean length 1000
    assert eta.seconds_left(4) == (1000 + 2 * 1000) / 100
    eta.finished("a")
    assert eta.seconds_left(3) == (500 + 2 * 1000) / 100
    assert eta.text(3) == "about 25 s left"


def test_the_counter_total_stays_when_a_failure_blocks_runs(monkeypatch):
    """A failure that blocks 14 runs settles them: the next line reads [16/45], not [2/31]."""
    import io
    import types

    import lthbench.run.progress as progress

    monkeypatch.setattr(progress, "describe", lambda run: run.run_id)
    out = io.StringIO()
    display = PlainDisplay(Console(file=out, width=200))
    display.add_runs(45)
    display.finished(types.SimpleNamespace(run_id="x"), Outcome("x", "failed", "boom"), None)
    display.add_runs(-14)  # the failed run's chain is blocked
    display.finished(types.SimpleNamespace(run_id="y"), Outcome("y", "failed", "boom"), None)
    assert [line.split(" ")[0] for line in out.getvalue().splitlines()] == ["[1/45]", "[16/45]"]
