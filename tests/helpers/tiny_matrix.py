"""The tiny LeNet-300-100 / MNIST matrix that the end-to-end tests run, with the keys each test varies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TRAINING = {"optimizer": "adam", "lr": 1.2e-3, "batch_size": 60, "iterations": 60, "eval_every": 20,
            "validation_size": 200, "train_subset": 2000, "test_subset": 500}
#: The three initializers of a lottery experiment: the ticket, its reinit control and late rewinding.
THREE_INITIALIZERS = '["original", "reinit", { name = "rewind", iteration = 20 }]'


def toml_value(value: Any) -> str:
    """A TOML literal for a string, number, bool or list of them (JSON writes those the TOML way)."""
    return json.dumps(list(value) if isinstance(value, tuple) else value)


def write_matrix(folder: Path, *, name: str = "tiny", seeds: Any = (0,), output: Path | None = None,
                 pruner: Any = "layerwise_magnitude", initializer: str = '"original"', rounds: int = 2,
                 schedule: str = "", filename: str = "matrix.toml", **training: Any) -> Path:
    """Write the matrix to ``folder / filename`` and return its path.

    ``initializer`` and ``schedule`` are TOML text (inline tables are easier
    to read that way); ``training`` overrides keys of :data:`TRAINING`.
    Results go to ``folder / "out"`` unless ``output`` says otherwise.
    """
    output = folder / "out" if output is None else output
    lines = ["[benchmark]", f"name = {toml_value(name)}", f"seeds = {toml_value(seeds)}",
             f"output = {toml_value(str(output))}", 'device = "cpu"', "",
             "[defaults]", 'dataset = "mnist"', 'architecture = "lenet_300_100"', "[defaults.training]"]
    lines += [f"{key} = {toml_value(value)}" for key, value in {**TRAINING, **training}.items()]
    lines += ["", "[[experiment]]", 'name = "lenet"', f"pruner = {toml_value(pruner)}",
              f"initializer = {initializer}", "[experiment.schedule]", f"rounds = {rounds}", "rate = 0.2", schedule]
    path = folder / filename
    path.write_text("\n".join(lines) + "\n")
    return path
