"""The one status rule: recorded runs keep their record's status, runs behind a failure are blocked."""

from __future__ import annotations

from lthbench.run.status import RECORDED, STOPPED, RunStatus, derive_statuses
from lthbench.store import Store

#: dense ← a ← b, and dense ← c: two chains sharing a dense run.
RUNS = {"dense": [], "a": ["dense"], "b": ["a", "dense"], "c": ["dense"]}


def test_recorded_runs_keep_their_status_and_the_others_are_pending():
    assert derive_statuses(RUNS, {"dense": "done"}) == {
        "dense": ("done", None), "a": ("pending", None), "b": ("pending", None), "c": ("pending", None)}


def test_a_failure_blocks_its_chain_through_blocked_runs_and_names_the_first_stopping_dependency():
    derived = derive_statuses(RUNS, {"dense": "done", "a": "diverged"})
    assert derived["b"] == (RunStatus.BLOCKED, "not run: it depends on run a (diverged)")
    assert derived["c"] == (RunStatus.PENDING, None)
    derived = derive_statuses(RUNS, {"dense": "failed"})
    assert derived["a"] == ("blocked", "not run: it depends on run dense (failed)")
    assert derived["b"] == ("blocked", "not run: it depends on run a (blocked)")


def test_a_run_without_a_record_is_running_where_a_live_process_holds_it():
    derived = derive_statuses(RUNS, {"dense": "done"}, running=lambda run_id: run_id == "c")
    assert [derived[run_id][0] for run_id in RUNS] == ["done", "pending", "pending", "running"]


def test_the_status_sets():
    assert RECORDED == {"done", "diverged", "failed"} and STOPPED == {"failed", "diverged", "blocked"}
    assert f"{RunStatus.DONE}" == "done" and RunStatus("blocked") is RunStatus.BLOCKED


def test_the_store_tells_the_status_of_a_recorded_run_only(tmp_path):
    store = Store(tmp_path)
    store.write_record("a", {"run_id": "a", "status": "diverged"})
    store.write_record("b", {"run_id": "b", "status": "running"})
    assert (store.status("a"), store.status("b"), store.status("c")) == (RunStatus.DIVERGED, None, None)
