"""Benchmark files: matrix expansion, and one clear error for every kind of mistake."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from lthbench.cli import main
from lthbench.config.parse import load_benchmark, parse_benchmark
from lthbench.errors import ConfigError
from lthbench.run.plan import cell_runs, plan_runs

VALID = """
[benchmark]
name = "t"
seeds = [0, 1]

[defaults]
dataset = "mnist"
architecture = "lenet_300_100"
[defaults.training]
optimizer = "adam"
lr = 1.2e-3
iterations = 100

[[experiment]]
name = "lenet"
pruner = "layerwise_magnitude"
initializer = ["original", "reinit"]
[experiment.schedule]
rounds = 2
rate = 0.2
"""


def parse(text, registry, tmp_path):
    path = tmp_path / "bench.toml"
    path.write_text(textwrap.dedent(text))
    return load_benchmark(path, registry)


def test_valid_file_expands_lists_into_cells(registry, tmp_path):
    text = VALID.replace('pruner = "layerwise_magnitude"', 'pruner = ["layerwise_magnitude", "global_magnitude"]')
    text += "[experiment.training]\nlr = [1e-3, 3e-3]\nlr_milestones = [[50], [60, 80]]\n"
    bench = parse(text, registry, tmp_path)
    assert len(bench.cells) == 2 * 2 * 2
    assert {c.pruner.name for c in bench.cells} == {"layerwise_magnitude", "global_magnitude"}
    assert {c.training.lr for c in bench.cells} == {1e-3, 3e-3}
    assert {c.training.lr_milestones for c in bench.cells} == {(50,), (60, 80)}
    # inherited from [defaults.training]
    assert all(c.training.optimizer == "adam" and c.training.iterations == 100 for c in bench.cells)
    # a cell is labelled by the training keys that vary among the experiment's cells, not every key given
    assert {c.label for c in bench.cells} == {"lr=0.001, lr_milestones=[50]", "lr=0.001, lr_milestones=[60, 80]",
                                              "lr=0.003, lr_milestones=[50]", "lr=0.003, lr_milestones=[60, 80]"}
    assert [c.label for c in parse(VALID, registry, tmp_path).cells] == [""]


def test_flat_list_for_a_list_valued_key_is_one_value(registry, tmp_path):
    bench = parse(VALID + "[experiment.training]\nlr_milestones = [50, 80]\n", registry, tmp_path)
    assert [c.training.lr_milestones for c in bench.cells] == [(50, 80)]


def test_plan_shares_dense_runs_and_counts_runs(registry, tmp_path):
    text = VALID.replace('pruner = "layerwise_magnitude"', 'pruner = ["layerwise_magnitude", "global_magnitude"]')
    bench = parse(text, registry, tmp_path)
    runs = cell_runs(bench)
    # 2 cells x 2 seeds x (1 dense + 2 rounds x 2 initializers)
    assert len(runs) == 2 * 2 * 5
    unique = {r.run_id for r in runs}
    # the dense run of a seed is the same for both pruners
    assert len(unique) == len(runs) - 2
    dense = [r for r in runs if r.round == 0]
    assert len({r.run_id for r in dense}) == 2
    # the plan holds each run once, in the order of the cells' runs
    assert [r.run_id for r in plan_runs(bench)] == list(dict.fromkeys(r.run_id for r in runs))


def test_run_ids_ignore_names_and_round_count(registry, tmp_path):
    a = plan_runs(parse(VALID, registry, tmp_path))
    b = plan_runs(parse(VALID.replace('name = "lenet"', 'name = "other"').replace("rounds = 2", "rounds = 3"),
                        registry, tmp_path))
    assert {r.run_id for r in a} < {r.run_id for r in b}


def test_adding_a_control_or_naming_the_default_mask_source_keeps_the_finished_runs(registry, tmp_path):
    ids = lambda text: {(r.seed, r.round, r.initializer_label): r.run_id for r in plan_runs(parse(text, registry, tmp_path))}
    ticket_only = ids(replace('initializer = ["original", "reinit"]', 'initializer = "original"'))
    with_reinit = ids(VALID)
    assert ticket_only.items() < with_reinit.items()  # the dense and ticket runs keep their ids
    with_rewind = ids(replace('["original", "reinit"]', '["original", "reinit", { name = "rewind", iteration = 20 }]'))
    assert with_reinit.items() < with_rewind.items()  # a rewinding point keeps even the dense run
    assert ids(replace("rate = 0.2", 'rate = 0.2\nmask_source = "original"')) == with_reinit
    by_reinit = ids(replace("rate = 0.2", 'rate = 0.2\nmask_source = "reinit"'))
    assert by_reinit[(0, 0, "dense")] == with_reinit[(0, 0, "dense")]
    assert by_reinit[(0, 1, "original")] != with_reinit[(0, 1, "original")]  # no longer the mask source
    assert by_reinit[(0, 2, "original")] != with_reinit[(0, 2, "original")]  # pruned from another lineage


def test_iterative_mask_lineage_follows_the_ticket(registry, tmp_path):
    runs = plan_runs(parse(VALID, registry, tmp_path))
    seed0 = [r for r in runs if r.seed == 0]
    dense, r1o, r1r, r2o, r2r = seed0
    assert r1o.mask_parent == r1r.mask_parent == dense.run_id
    assert r2o.mask_parent == r2r.mask_parent == r1o.run_id
    assert r1o.is_mask_source and not r1r.is_mask_source


def test_one_shot_masks_all_come_from_the_dense_run(registry, tmp_path):
    runs = plan_runs(parse(VALID.replace("rounds = 2", 'rounds = 2\nmode = "one_shot"'), registry, tmp_path))
    dense = runs[0]
    assert all(r.mask_parent == dense.run_id for r in runs if r.round > 0 and r.seed == dense.seed)


def replace(old, new):
    assert old in VALID, old
    return VALID.replace(old, new)


MALFORMED = [
    ("syntax", "[benchmark\nname = 'x'", ["TOML syntax", "line 1"]),
    ("top-level typo", VALID + "\n[benchmarks]\nx = 1\n", ["benchmarks", "did you mean 'benchmark'"]),
    ("missing name", replace('name = "t"\n', ""), ["benchmark.name", "missing"]),
    ("empty seeds", replace("seeds = [0, 1]", "seeds = []"), ["benchmark.seeds", "non-empty list"]),
    ("string seed", replace("seeds = [0, 1]", 'seeds = ["a"]'), ["benchmark.seeds", "non-negative integers"]),
    ("repeated seed", replace("seeds = [0, 1]", "seeds = [1, 1]"), ["benchmark.seeds", "repeats a seed"]),
    ("bad device", replace("seeds = [0, 1]", 'seeds = [0]\ndevice = "gpu"'), ["benchmark.device", "'gpu'", "cuda:N"]),
    ("no experiment", VALID.split("[[experiment]]")[0], ["experiment", "at least one experiment"]),
    ("experiment without name", replace('name = "lenet"\n', ""), ["experiment[0].name", "missing"]),
    ("duplicate experiment", VALID + '\n[[experiment]]\nname = "lenet"\npruner = "global_magnitude"\n',
     ["experiment[1].name", "'lenet' is used by an earlier experiment"]),
    ("experiment key typo", replace('pruner = "layerwise_magnitude"', 'prunner = "layerwise_magnitude"'),
     ["experiment[0].prunner", "did you mean 'pruner'"]),
    ("unknown pruner", replace('pruner = "layerwise_magnitude"', 'pruner = "magnitude"'),
     ["experiment[0](lenet).pruner", "unknown pruner 'magnitude'", "installed:", "global_magnitude"]),
    ("unknown initializer", replace('["original", "reinit"]', '["original", "reinitialise"]'),
     ["initializer[1]", "unknown initializer 'reinitialise'", "did you mean 'reinit'"]),
    ("unknown architecture", replace('architecture = "lenet_300_100"', 'architecture = "lenet300"'),
     ["architecture", "unknown architecture 'lenet300'", "did you mean 'lenet_300_100'"]),
    ("unknown dataset", replace('dataset = "mnist"', 'dataset = "mnits"'),
     ["dataset", "unknown dataset 'mnits'", "did you mean 'mnist'"]),
    ("negative rate", replace("rate = 0.2", "rate = -0.1"), ["schedule", "rate = -0.1 is not allowed", "(0, 1)"]),
    ("typo in the defaults", replace("lr = 1.2e-3", "lr = 1.2e-3\noptimiser = 'sgd'"),
     ["defaults.training.optimiser", "did you mean 'optimizer'"]),
    ("infinite lr", replace("lr = 1.2e-3", "lr = inf"), ["training", "lr = inf is not allowed", "positive number"]),
    ("validation as large as the subset", replace("iterations = 100", "iterations = 100\ntrain_subset = 500\n"
                                                  "validation_size = 500"),
     ["training", "validation_size = 500 is not allowed", "smaller than train_subset"]),
    ("rewind after training", replace('["original", "reinit"]', '["original", { name = "rewind", iteration = 500 }]'),
     ["experiment[0](lenet).initializer[1]", "rewind(iteration=500) rewinds to iteration 500",
      "after the end of training (iterations = 100)"]),
    ("rate of one", replace("rate = 0.2", "rate = 1.0"), ["schedule", "rate = 1.0 is not allowed"]),
    ("zero rounds", replace("rounds = 2", "rounds = 0"), ["schedule", "rounds = 0 is not allowed", "at least 1"]),
    ("bad mode", replace("rounds = 2", 'rounds = 2\nmode = "oneshot"'), ["mode = 'oneshot'", "iterative, one_shot"]),
    ("training key typo", replace("iterations = 100", "iteration = 100"),
     ["training.iteration", "did you mean 'iterations'", "allowed keys"]),
    ("wrong type", replace("lr = 1.2e-3", 'lr = "fast"'), ["training.lr", "'fast' has the wrong type", "float"]),
    ("bool for int", replace("iterations = 100", "iterations = true"), ["training.iterations", "wrong type", "int"]),
    ("zero batch", replace("iterations = 100", "iterations = 100\nbatch_size = 0"),
     ["batch_size = 0 is not allowed", "positive integer"]),
    ("unknown optimizer", replace('optimizer = "adam"', 'optimizer = "rmsprop"'),
     ["optimizer = 'rmsprop' is not allowed", "sgd, adam"]),
    ("nesterov without momentum", replace('optimizer = "adam"', 'optimizer = "sgd"\nnesterov = true'),
     ["nesterov = true needs", "momentum"]),
    ("bad plugin parameter", replace('pruner = "layerwise_magnitude"', 'pruner = { name = "global_magnitude", excluded = ["fc"] }'),
     ["pruner(global_magnitude).excluded", "did you mean 'exclude'"]),
    ("plugin table without name", replace('pruner = "layerwise_magnitude"', "pruner = { rate = 1 }"),
     ["pruner", "needs a 'name' string"]),
    ("rewind without point", replace('["original", "reinit"]', '["original", { name = "rewind" }]'),
     ["initializer[1](rewind)", "exactly one of iteration"]),
    ("mask source not an initializer", replace("rounds = 2", 'rounds = 2\nmask_source = "rewind"'),
     ["schedule.mask_source", "'rewind' is not one of"]),
    ("empty initializers", replace('["original", "reinit"]', "[]"), ["initializer", "name at least one"]),
    ("empty expansion", VALID + "[experiment.training]\nlr = []\n", ["training.lr", "empty list"]),
    ("training not a table", replace("[defaults.training]", "[defaults.other]"), ["defaults.other", "unknown key"]),
    ("unknown backend", VALID + '[execution]\nbackend = "slurm"\n', ["execution.backend", "'slurm'", "'ray'"]),
    ("execution key typo", VALID + '[execution]\nadress = "auto"\n', ["execution.adress", "did you mean 'address'"]),
    ("address without ray", VALID + '[execution]\naddress = "auto"\n', ["execution.address", 'backend = "ray"']),
    ("address not a string", VALID + '[execution]\nbackend = "ray"\naddress = 6379\n',
     ["execution.address", "6379", "host:port"]),
]


def test_the_execution_table_names_the_backend_and_its_address(registry, tmp_path):
    assert (parse(VALID, registry, tmp_path).backend, parse(VALID, registry, tmp_path).address) == ("local", "")
    benchmark = parse(VALID + '[execution]\nbackend = "ray"\naddress = "10.0.0.1:6379"\n', registry, tmp_path)
    assert (benchmark.backend, benchmark.address) == ("ray", "10.0.0.1:6379")


@pytest.mark.parametrize("text,expected", [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_file_gives_one_clear_error(text, expected, registry, tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_benchmark(path, registry)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert "\n" not in message.strip()
    for part in expected:
        assert part in message
    # the command line prints the same sentence, exits 2, no traceback
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"lthbench: error: {message}"
    assert "Traceback" not in err


def test_missing_file_is_a_clear_error(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "nope.toml")]) == 2
    assert "nope.toml: no such file" in capsys.readouterr().err


def test_missing_data_set_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "bench.toml"
    path.write_text(VALID)
    assert main(["validate", str(path), "--data-root", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "dataset 'mnist'" in err and str(tmp_path / "empty") in err and "Traceback" not in err


def test_validate_prints_the_matrix(tmp_path, data_root):
    path = tmp_path / "bench.toml"
    path.write_text(VALID)
    out = subprocess.run([sys.executable, "-m", "lthbench.cli", "validate", str(path), "--data-root", str(data_root)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "layerwise_magnitude" in out.stdout and "original, reinit" in out.stdout
    # 2 seeds x (1 dense + 2 rounds x 2 initializers) runs of 100 iterations
    assert "10 training runs, 1,000 training iterations" in out.stdout
    path.write_text(replace('["original", "reinit"]', '["original", { name = "rewind", iteration = 30 }]'))
    out = subprocess.run([sys.executable, "-m", "lthbench.cli", "validate", str(path), "--data-root", str(data_root)],
                         capture_output=True, text=True)
    assert "10 training runs, 880 training iterations" in out.stdout  # rewound runs train from iteration 30


def test_run_refuses_an_unknown_device_and_an_output_folder_it_cannot_create(tmp_path, data_root, capsys):
    path = tmp_path / "bench.toml"
    path.write_text(VALID)
    run = ["run", str(path), "--data-root", str(data_root), "--quiet"]
    assert main(run + ["--devices", "cpu,foo"]) == 2
    assert "--devices: 'foo' is not a device; give cpu, cuda or cuda:N" in capsys.readouterr().err
    assert main(run + ["--device", "gpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "lthbench: error: --device: 'gpu' is not allowed; use auto, cpu, cuda or cuda:N"
    (tmp_path / "a-file").write_text("")
    assert main(run + ["--output", str(tmp_path / "a-file" / "out")]) == 2
    err = capsys.readouterr().err
    assert f"the output folder {tmp_path / 'a-file' / 'out'} cannot be created: Not a directory" in err
    assert "Traceback" not in err


def test_parse_reports_file_name_for_inline_text(registry, tmp_path):
    with pytest.raises(ConfigError, match="inline.toml: benchmark.name"):
        parse_benchmark("[benchmark]\n", tmp_path / "inline.toml", registry)


def test_the_output_layer_rate_is_output_rate_when_set_else_half_the_rate():
    from lthbench.config.settings import Schedule

    assert Schedule(rate=0.2).output_layer_rate == 0.1
    assert Schedule(rate=0.2, output_rate=0.0).output_layer_rate == 0.0
    assert Schedule(rate=0.2, output_rate=0.15).output_layer_rate == 0.15


def test_a_level_rate_compounds_in_one_shot_mode_only():
    from lthbench.protocols import level_rate

    assert level_rate(0.5, 2, one_shot=True) == 0.75
    assert level_rate(0.5, 2, one_shot=False) == 0.5
    assert level_rate(0.2, 1, one_shot=True) == pytest.approx(0.2)
