"""Hostile and careless benchmark files: each is refused at validation with one sentence, never a traceback.

Every case is checked through ``lthbench validate``: exit 2, one line on
stderr naming the file and the key, no traceback.
"""

from __future__ import annotations

import math
import random
import textwrap

import pytest

from lthbench.cli import main
from lthbench.config.parse import MAX_DEPTH, MAX_RUNS, load_benchmark
from lthbench.errors import ConfigError

TINY = """
[benchmark]
name = "tiny"
seeds = [0]

[defaults]
dataset = "mnist"
architecture = "lenet_300_100"
[defaults.training]
optimizer = "adam"
lr = 1.2e-3
batch_size = 60
iterations = 40
eval_every = 20
validation_size = 200
train_subset = 1000
test_subset = 500

[[experiment]]
name = "lenet"
pruner = "layerwise_magnitude"
initializer = "original"
[experiment.schedule]
rounds = 2
rate = 0.2
"""


def edit(old: str, new: str) -> str:
    assert old in TINY, old
    return TINY.replace(old, new)


def refused(text: str, tmp_path, capsys, *parts: str, data_root=None) -> str:
    """Validate ``text``; assert exit 2 with one error line holding ``parts``; return the line."""
    path = tmp_path / "bad.toml"
    path.write_text(textwrap.dedent(text))
    argv = ["validate", str(path)] + (["--data-root", str(data_root)] if data_root else [])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err[:2000]
    assert lines[0].startswith(f"lthbench: error: {path}: "), lines[0][:300]
    for part in parts:
        assert part in lines[0], lines[0][:2000]
    return lines[0]


# --------------------------------------------------------------------------- D1: nesting


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 5000])
@pytest.mark.parametrize("open_,close", [("[", "]"), ("{ a = ", " }")])
def test_values_nested_too_deep_are_refused(depth, open_, close, tmp_path, capsys):
    value = open_ * depth + "1" + close * depth
    line = refused(edit("lr = 1.2e-3", f"lr = {value}"), tmp_path, capsys, f"nested more than {MAX_DEPTH} levels")
    assert len(line) < 500  # the value is not echoed whole


def test_the_deepest_valid_keys_stay_accepted(registry, tmp_path):
    text = edit('pruner = "layerwise_magnitude"',
                'pruner = [{ name = "layerwise_magnitude", layer_rates = [["fc1.weight", 0.1]] }]')
    text += "[experiment.training]\nlr_milestones = [[10], [20, 30]]\n"
    path = tmp_path / "ok.toml"
    path.write_text(text)
    assert len(load_benchmark(path, registry).cells) == 2


# --------------------------------------------------------------------------- D3: matrix size


def test_absurd_round_counts_are_refused_without_expanding(tmp_path, capsys):
    refused(edit("rounds = 2", "rounds = 1000000000"), tmp_path, capsys, "experiment[0](lenet)",
            "1,000,000,001 training runs", f"at most {MAX_RUNS:,}")


def test_absurd_training_products_are_refused_before_the_product_is_built(tmp_path, capsys):
    values = ", ".join(str(i + 1) for i in range(40))
    table = "".join(f"{key} = [{values}]\n" for key in ("eval_every", "warmup_iterations", "batch_size", "test_subset"))
    # 40^4 = 2,560,000 cells of 3 runs each
    refused(TINY + "[experiment.training]\n" + table, tmp_path, capsys, "7,680,000 training runs",
            f"at most {MAX_RUNS:,}")


def test_the_bound_counts_the_whole_file(tmp_path, capsys):
    rounds = MAX_RUNS // 3  # each experiment: 1 dense + rounds runs, so the third crosses the bound
    text = edit("rounds = 2", f"rounds = {rounds}")
    for name in ("b", "c"):
        text += f'\n[[experiment]]\nname = "{name}"\npruner = "global_magnitude"\n[experiment.schedule]\nrounds = {rounds}\n'
    refused(text, tmp_path, capsys, "experiment[2](c)", "with the experiments before it")


# --------------------------------------------------------------------------- D4: infinities


@pytest.mark.parametrize("old,new,key", [
    ("iterations = 40", "epochs = inf", "epochs = inf"),
    ("iterations = 40", "epochs = nan", "epochs = nan"),
    ('initializer = "original"', 'initializer = ["original", { name = "rewind", epoch = inf }]', "epoch = inf"),
    ("rate = 0.2", "rate = 0.2\noutput_rate = nan", "output_rate = nan"),
])
def test_non_finite_numbers_are_refused(old, new, key, tmp_path, capsys):
    refused(edit(old, new), tmp_path, capsys, key)


# --------------------------------------------------------------------------- D5: zero-length training


def test_a_rewind_to_the_last_iteration_is_refused(tmp_path, capsys):
    refused(edit('initializer = "original"', 'initializer = ["original", { name = "rewind", iteration = 40 }]'),
            tmp_path, capsys, "experiment[0](lenet).initializer[1]", "rewinds to iteration 40",
            "at or after the end of training (iterations = 40)")


def test_a_rewind_by_epochs_to_the_end_is_refused(tmp_path, capsys):
    # 800 training images / 60 = 13 iterations per epoch: epochs = 2 trains 26, epoch = 2 rewinds to 26
    refused(edit("iterations = 40", "epochs = 2.0").replace('initializer = "original"',
                                                            'initializer = ["original", { name = "rewind", epoch = 2.0 }]'),
            tmp_path, capsys, "rewinds to iteration 26", "(26 iterations)")


def test_a_training_of_zero_iterations_is_refused(tmp_path, capsys):
    refused(edit("iterations = 40", "epochs = 1e-9"), tmp_path, capsys, "experiment[0](lenet).training",
            "trains 0 iterations", "13 per epoch")


# --------------------------------------------------------------------------- D6 and data-set sizes


@pytest.mark.parametrize("old,new,parts", [
    ("batch_size = 60", "batch_size = 900", ["batch_size = 900", "800 training images"]),
    ("train_subset = 1000", "train_subset = 70000", ["train_subset = 70000", "60000 training images of mnist"]),
    ("test_subset = 500", "test_subset = 10001", ["test_subset = 10001", "10000 test images of mnist"]),
    ("train_subset = 1000", "train_subset = 0\nvalidation_size = 60000",
     ["validation_size = 60000", "60000 training images of mnist"]),
])
def test_sizes_beyond_the_data_set_are_refused(old, new, parts, tmp_path, capsys):
    text = edit(old, new)
    if "validation_size = 60000" in new:
        text = text.replace("validation_size = 200\n", "")
    refused(text, tmp_path, capsys, "experiment[0](lenet).training", *parts)


def test_a_batch_of_the_whole_training_set_is_accepted(registry, tmp_path):
    path = tmp_path / "ok.toml"
    path.write_text(edit("batch_size = 60", "batch_size = 800"))
    assert load_benchmark(path, registry).cells[0].training.batch_size == 800


# --------------------------------------------------------------------------- iterations and epochs


def test_iterations_and_epochs_in_one_table_are_refused(tmp_path, capsys):
    refused(edit("iterations = 40", "iterations = 40\nepochs = 2.0"), tmp_path, capsys, "defaults.training",
            "both iterations and epochs")


@pytest.mark.parametrize("default,override,iterations,epochs", [
    ("iterations = 40", "epochs = 2.0", 1000, 2.0),
    ("epochs = 2.0", "iterations = 30", 30, 0.0),
])
def test_an_experiments_training_length_replaces_the_defaults(default, override, iterations, epochs, registry,
                                                              tmp_path):
    path = tmp_path / "ok.toml"
    path.write_text(edit("iterations = 40", default) + f"[experiment.training]\n{override}\n")
    training = load_benchmark(path, registry).cells[0].training
    assert (training.iterations, training.epochs) == (iterations, epochs)


# --------------------------------------------------------------------------- names, seeds, encoding


@pytest.mark.parametrize("name,part", [
    ("   ", "blank"), ("lenet ", "white space"), (" lenet", "white space"),
    ("le\\u0000net", "printable"), ("le\\nnet", "printable"), ("le\\u00a0net", "printable"),
])
def test_experiment_names_that_could_be_confused_are_refused(name, part, tmp_path, capsys):
    refused(edit('name = "lenet"', f'name = "{name}"'), tmp_path, capsys, "experiment[0].name", part)


def test_names_with_inner_spaces_and_any_script_are_accepted(registry, tmp_path):
    path = tmp_path / "ok.toml"
    path.write_text(edit('name = "lenet"', 'name = "LeNet 300·100 (θ₀ ticket)"'))
    assert load_benchmark(path, registry).cells[0].experiment == "LeNet 300·100 (θ₀ ticket)"


def test_names_differing_only_by_trailing_space_cannot_both_exist(tmp_path, capsys):
    text = TINY + '\n[[experiment]]\nname = "lenet "\npruner = "global_magnitude"\n'
    refused(text, tmp_path, capsys, "experiment[1].name", "white space")


@pytest.mark.parametrize("seeds", ["[18446744073709551616]", "[9223372036854775808]"])
def test_seeds_beyond_64_bits_are_refused(seeds, tmp_path, capsys):
    refused(edit("seeds = [0]", f"seeds = {seeds}"), tmp_path, capsys, "benchmark.seeds[0]", "64-bit")


def test_the_largest_64_bit_seed_is_accepted(registry, tmp_path):
    path = tmp_path / "ok.toml"
    path.write_text(edit("seeds = [0]", f"seeds = [{2**63 - 1}]"))
    assert load_benchmark(path, registry).seeds == (2**63 - 1,)


def test_a_utf8_byte_order_mark_is_read_as_nothing(registry, tmp_path):
    plain, marked = tmp_path / "plain.toml", tmp_path / "marked.toml"
    plain.write_text(TINY, encoding="utf-8")
    marked.write_bytes(b"\xef\xbb\xbf" + TINY.encode())
    assert load_benchmark(marked, registry).cells == load_benchmark(plain, registry).cells


# --------------------------------------------------------------------------- checks that used to wait for training


@pytest.mark.parametrize("pruner,parts", [
    ('{ name = "global_magnitude", exclude = ["fc9.weight"] }', ["exclude names 'fc9.weight'", "prunable layers:"]),
    ('{ name = "global_magnitude", exclude = ["fc1.weight", "fc2.weight", "fc3.weight"] }', ["leaves no prunable"]),
    ('{ name = "layerwise_magnitude", layer_rates = [["fc9.weight", 0.1]] }', ["layer_rates names 'fc9.weight'"]),
    ('{ name = "random", like = "magnitude" }', ["unknown pruner 'magnitude'", "installed:"]),
    ('"l1_filter"', ["l1_filter needs an architecture with convolution filter groups"]),
])
def test_pruner_settings_that_cannot_fit_the_network_are_refused(pruner, parts, tmp_path, capsys):
    refused(edit('pruner = "layerwise_magnitude"', f"pruner = {pruner}"), tmp_path, capsys,
            "experiment[0](lenet).pruner", *parts)


def test_pruner_checks_pass_for_a_network_that_fits(registry, tmp_path):
    path = tmp_path / "ok.toml"
    path.write_text(edit('architecture = "lenet_300_100"', 'architecture = "conv2"')
                    .replace('pruner = "layerwise_magnitude"', 'pruner = ["l1_filter", { name = "random", like = "global_magnitude" }]'))
    assert [c.pruner.name for c in load_benchmark(path, registry).cells] == ["l1_filter", "random"]


# --------------------------------------------------------------------------- output and paths in the file


@pytest.mark.parametrize("key,value,part", [
    ("output", '""', "benchmark.output: empty"),
    ("output", '"out\\u0000x"', "benchmark.output"),
    ("data_root", '"da\\u0000ta"', "benchmark.data_root"),
])
def test_unusable_paths_in_the_file_are_refused(key, value, part, tmp_path, capsys):
    refused(edit('seeds = [0]', f"seeds = [0]\n{key} = {value}"), tmp_path, capsys, part)


# --------------------------------------------------------------------------- the class: random hostile values


KEYS = ["benchmark.name", "benchmark.seeds", "benchmark.output", "benchmark.device", "defaults.training.lr",
        "defaults.training.iterations", "defaults.training.epochs", "defaults.training.batch_size",
        "defaults.training.betas", "defaults.training.lr_milestones", "defaults.training.validation_size",
        "defaults.training.train_subset", "experiment.0.name", "experiment.0.pruner", "experiment.0.initializer",
        "experiment.0.schedule.rounds", "experiment.0.schedule.rate", "experiment.0.schedule.output_rate",
        "experiment.0.training", "experiment.0.architecture"]


def hostile_value(rng: random.Random, depth: int = 0):
    """A random TOML-expressible value: huge or non-finite numbers, odd strings, nested arrays and tables."""
    kind = rng.choice(["int", "float", "str", "bool", "list", "table"] if depth < 40 else ["int", "str"])
    if kind == "int":
        return rng.choice([0, -1, 1, 2**63 - 1, -(2**63), 10**30, rng.randint(-10**6, 10**6)])
    if kind == "float":
        return rng.choice([math.inf, -math.inf, math.nan, 1e308, 1e-320, 0.5, -0.0])
    if kind == "str":
        return rng.choice(["", " ", "..", "../..", "a/b", "x" * 5000, "l1_filter", "random", "cuda:99999999999",
                           "\u202e", "original", "\t"])
    if kind == "bool":
        return rng.random() < 0.5
    width = rng.choice([0, 1, 2, 3])
    nested = depth + rng.choice([1, 1, 1, 20])
    if kind == "list":
        return [hostile_value(rng, nested) for _ in range(width)]
    return {rng.choice(["name", "like", "exclude", "iteration", "epoch", "k"]) + str(i): hostile_value(rng, nested)
            for i in range(width)}


def toml_literal(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return '"' + "".join(c if c.isprintable() and c not in '"\\' else f"\\u{ord(c):04x}" for c in value) + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    return "{" + ", ".join(f"{k} = {toml_literal(v)}" for k, v in value.items()) + "}"


def with_value(key: str, literal: str) -> str:
    """TINY with ``key`` (dotted; ``experiment.0`` is the first experiment) set to the TOML ``literal``."""
    table, _, leaf = key.rpartition(".")
    header = {"benchmark": "[benchmark]", "defaults.training": "[defaults.training]",
              "experiment.0": "[[experiment]]", "experiment.0.schedule": "[experiment.schedule]"}[table]
    blocks = TINY.strip().split("\n\n")
    sections: list[list[str]] = []
    for block in blocks:  # a section starts at every header line
        for line in block.splitlines():
            if line.startswith("[") or not sections:
                sections.append([])
            sections[-1].append(line)
    for lines in sections:
        if lines[0] == header:
            lines[1:] = [line for line in lines[1:] if not line.startswith(f"{leaf} =")] + [f"{leaf} = {literal}"]
    return "\n".join("\n".join(lines) for lines in sections) + "\n"


def test_random_hostile_values_never_give_a_traceback(registry, tmp_path):
    rng = random.Random(12)
    path = tmp_path / "hostile.toml"
    outcomes = {"accepted": 0, "refused": 0}
    for _ in range(400):
        key = rng.choice(KEYS)
        path.write_text(with_value(key, toml_literal(hostile_value(rng))))
        try:
            load_benchmark(path, registry)
        except ConfigError as error:
            message = str(error)
            assert message.startswith(f"{path}: ") and "\n" not in message and len(message) < 600, message[:300]
            outcomes["refused"] += 1
        else:
            outcomes["accepted"] += 1
    assert outcomes["refused"] > 300 and outcomes["accepted"] > 0  # the cases reach the checks and get past them
