"""When lthbench lets torchvision download a data set: never over a data root the user named, never against
``--no-download`` or ``download = false``, and by default only into its own cache folder when a data set is
missing there. Nothing here downloads: ``validate`` checks the data but never loads it."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.tiny_matrix import write_matrix

from lthbench.cli import main
from lthbench.data_root import resolve_download


@pytest.mark.parametrize(("option", "setting", "named", "missing", "expected"), [
    (None, None, False, True, True),     # a new user: the default cache is empty, fetch into it
    (None, None, False, False, False),   # the cache holds the data: nothing to fetch
    (None, None, True, True, False),     # a folder the user named is read as it is
    (None, False, False, True, False),   # download = false in the file means never
    (None, True, True, True, True),      # download = true in the file allows it anywhere
    (False, True, False, True, False),   # --no-download wins over the file
    (True, False, True, False, True),    # --download wins over the file
])
def test_download_is_decided_by_the_option_then_the_file_then_where_the_data_is(option, setting, named, missing,
                                                                                 expected):
    assert resolve_download(option, setting, named, missing) is expected


@pytest.fixture
def empty_cache(tmp_path, monkeypatch) -> Path:
    """No data root named anywhere, and a user cache folder with nothing in it."""
    monkeypatch.delenv("LTHBENCH_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "lthbench" / "data"


def with_download(path: Path, value: str) -> Path:
    """The matrix file with ``download = value`` in its [benchmark] table."""
    path.write_text(path.read_text().replace("[benchmark]\n", f"[benchmark]\ndownload = {value}\n", 1))
    return path


def test_by_default_a_missing_data_set_is_fetched_into_the_cache(tmp_path, empty_cache, capsys):
    assert main(["validate", str(write_matrix(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert f"mnist: not in {empty_cache}; torchvision downloads it there on first use" in out
    assert not empty_cache.exists()  # validate downloads nothing


@pytest.mark.parametrize(("options", "setting"), [(["--no-download"], None), ([], "false"),
                                                 (["--no-download"], "true")])
def test_no_download_stops_with_one_sentence_naming_the_folder(tmp_path, empty_cache, capsys, options, setting):
    path = write_matrix(tmp_path)
    if setting:
        with_download(path, setting)
    assert main(["validate", str(path), *options]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lthbench: error: ") and err.count("\n") == 1
    assert str(empty_cache / "MNIST" / "raw") in err and "download" in err
    assert not empty_cache.exists()


def test_a_named_data_root_is_never_downloaded_into(tmp_path, empty_cache, monkeypatch, capsys):
    monkeypatch.setenv("LTHBENCH_DATA", str(tmp_path / "local"))
    assert main(["validate", str(write_matrix(tmp_path))]) == 2
    assert str(tmp_path / "local" / "MNIST" / "raw") in capsys.readouterr().err
    assert main(["validate", str(write_matrix(tmp_path)), "--data-root", str(tmp_path / "other")]) == 2
    assert str(tmp_path / "other" / "MNIST" / "raw") in capsys.readouterr().err


def test_data_already_in_the_cache_is_used_without_download(tmp_path, empty_cache, data_root, capsys):
    empty_cache.mkdir(parents=True)
    (empty_cache / "MNIST").symlink_to(data_root / "MNIST", target_is_directory=True)
    assert main(["validate", str(write_matrix(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert "downloads" not in out and f"data root: {empty_cache};" in out
