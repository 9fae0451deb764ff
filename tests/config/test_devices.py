"""The device grammar shared by benchmark files and the command line."""

from __future__ import annotations

import pytest
import torch

from lthbench.config.devices import is_device, resolve_device, visible_devices


@pytest.mark.parametrize("name", ["auto", "cpu", "cuda", "cuda:0", "cuda:12"])
def test_the_grammar_accepts_auto_cpu_cuda_and_cuda_n(name):
    assert is_device(name)


@pytest.mark.parametrize("name", ["gpu", "cuda:", "cuda:x", "cpu:0", "CPU", " cpu", "cpu\n", "", 0, None])
def test_the_grammar_refuses_anything_else(name):
    assert not is_device(name)


def test_auto_is_refused_where_a_concrete_device_is_needed():
    assert not is_device("auto", auto=False) and is_device("cuda:1", auto=False)


def test_auto_means_the_first_gpu_if_there_is_one():
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_visible_devices_name_every_gpu_for_cuda():
    assert visible_devices("cpu") == ["cpu"] and visible_devices("cuda:1") == ["cuda:1"]
    assert visible_devices("cuda") == [f"cuda:{i}" for i in range(torch.cuda.device_count())]


@pytest.mark.parametrize("command", [["bench"], ["run", "matrix.toml"]])
def test_the_command_line_refuses_a_device_outside_the_grammar(command, tmp_path, monkeypatch, capsys):
    from lthbench.cli import main
    from helpers import tiny_matrix

    monkeypatch.chdir(tmp_path)
    tiny_matrix.write_matrix(tmp_path)
    assert main([*command, "--device", "gpu"]) == 2
    assert capsys.readouterr().err.strip() == ("lthbench: error: --device: 'gpu' is not allowed; "
                                               "use auto, cpu, cuda or cuda:N")
