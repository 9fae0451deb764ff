"""The Ray executor's options and its optional dependency, checked without a cluster."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lthbench.cli import main
from helpers import tiny_matrix

#: Runs ``lthbench`` in a Python where ``import ray`` fails, as it does without the ``ray`` extra.
WITHOUT_RAY = "import sys; sys.modules['ray'] = None; from lthbench.cli import main; sys.exit(main(sys.argv[1:]))"


def test_without_the_extra_the_ray_executor_is_one_sentence(tmp_path, data_root):
    matrix = tiny_matrix.write_matrix(tmp_path)
    done = subprocess.run([sys.executable, "-c", WITHOUT_RAY, "run", str(matrix), "--executor", "ray",
                           "--data-root", str(data_root)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip() == ("lthbench: error: --executor ray needs Ray, which is not installed here; "
                                   "install it with pip install 'lthbench[ray]'")
    assert not list((tmp_path / "out").glob("runs/*/record.json"))


@pytest.mark.parametrize("options,expected", [
    (["--executor", "local", "--ray-address", "auto"], "--ray-address names a Ray cluster"),
    (["--executor", "ray", "--jobs", "2"], "--jobs chooses this machine's worker processes"),
    (["--ray-address", "auto", "--devices", "cpu"], "--devices chooses this machine's worker processes"),
], ids=["address without ray", "jobs with ray", "devices with ray"])
def test_options_that_contradict_the_executor_are_refused(tmp_path, capsys, options, expected):
    matrix = tiny_matrix.write_matrix(tmp_path)
    assert main(["run", str(matrix), *options]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
