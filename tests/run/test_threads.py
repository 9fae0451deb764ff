"""The thread rule of training processes: cores shared among jobs, set explicitly in every worker."""

from __future__ import annotations

import multiprocessing
import os

import pytest
import torch

from lthbench.run.threads import apply_threads, default_jobs, default_threads, usable_cores


def test_usable_cores_follow_the_affinity_mask():
    assert usable_cores() == len(os.sched_getaffinity(0))


def test_cores_are_divided_among_jobs_and_never_below_one():
    assert default_threads(1, cores=16) == 16
    assert default_threads(4, cores=16) == 4
    assert default_threads(3, cores=2) == 1
    assert default_threads(1) == usable_cores()
    assert default_jobs(cores=2) == 2 and default_jobs(cores=64) == 8 and default_jobs(cores=1) == 1


def _threads_after_apply(n: int, queue) -> None:
    torch.ones(1000, 1000) @ torch.ones(1000, 1000)  # parallel work first: the inter-op count is fixed now
    queue.put((apply_threads(n), torch.get_num_threads()))


def test_apply_threads_sets_intra_op_threads_even_after_parallel_work():
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_threads_after_apply, args=(1, queue))
    process.start()
    assert queue.get(timeout=120) == (1, 1)
    process.join()
    assert process.exitcode == 0


def test_apply_threads_refuses_zero():
    with pytest.raises(ValueError, match="at least 1"):
        apply_threads(0)
