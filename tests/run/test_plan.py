"""The iteration arithmetic of a run: training length and the iteration it starts at."""

from __future__ import annotations

import dataclasses

from lthbench.config.parse import load_benchmark
from lthbench.config.settings import Training
from lthbench.run.plan import iterations_per_epoch, plan_runs, start_iteration, training_length
from helpers import tiny_matrix


def test_training_length_is_the_iterations_or_the_epochs_over_the_known_training_images():
    assert training_length(Training(iterations=300)) == 300
    by_epochs = Training(epochs=2.5, batch_size=100, validation_size=200)
    assert training_length(by_epochs) is None  # the data set's size is unknown before it loads
    assert training_length(by_epochs, train_size=1050) == 25
    with_subset = dataclasses.replace(by_epochs, train_subset=1200)
    assert iterations_per_epoch(with_subset) == 10 and training_length(with_subset) == 25


def test_a_run_starts_at_its_initializers_rewind_point(tmp_path, registry):
    path = tiny_matrix.write_matrix(tmp_path, iterations=40, initializer='{ name = "rewind", iteration = 30 }')
    dense, rewound, _ = plan_runs(load_benchmark(path, registry))
    assert (start_iteration(dense, registry), start_iteration(rewound, registry)) == (0, 30)
