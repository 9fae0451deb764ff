"""Where data sets are read from, and where files derived from them are cached.

The data root may be read-only (a shared folder, a mounted volume), so lthbench
never writes into it except to download a data set there;
decompressed and decoded copies go to the cache folder instead.

Whether torchvision may download a missing data set (:func:`resolve_download`):
``--download`` / ``--no-download`` decide first, then ``download = true`` /
``false`` in ``[benchmark]``. With neither, lthbench downloads only into its
own default folder (``~/.cache/lthbench/data``) and only what is missing
there; a folder the user named (``--data-root``, ``data_root``,
``$LTHBENCH_DATA``) is read as it is, so a local copy is used without network.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

#: Data root used when neither ``--data-root`` nor ``[benchmark] data_root`` is given.
DATA_ENV = "LTHBENCH_DATA"
#: Folder for derived files; defaults to the user's cache folder.
CACHE_ENV = "LTHBENCH_CACHE"


def _user_cache() -> Path:
    """``$XDG_CACHE_HOME/lthbench``, or ``~/.cache/lthbench`` when that variable is unset."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lthbench"


def resolve_data_root(cli_value: str | None, config_value: str = "") -> Path:
    """The data root: ``--data-root``, else the benchmark's ``data_root``, else ``$LTHBENCH_DATA``, else the cache.

    Empty values count as not given. The default is ``data`` under the user's
    cache folder, where torchvision downloads to when downloading is allowed.
    """
    chosen = cli_value or config_value or os.environ.get(DATA_ENV)
    return Path(chosen).expanduser() if chosen else _user_cache() / "data"


def data_root_named(cli_value: str | None, config_value: str = "") -> bool:
    """Whether the user named the data root (``--data-root``, ``data_root`` or ``$LTHBENCH_DATA``)."""
    return bool(cli_value or config_value or os.environ.get(DATA_ENV))


def resolve_download(option: bool | None, setting: bool | None, root_named: bool, missing: bool) -> bool:
    """Whether torchvision may download missing data sets.

    ``option`` is ``--download`` (True) / ``--no-download`` (False) / neither
    (None), ``setting`` the benchmark's ``download`` (None when unset). Unset
    in both places, the answer is True only when the data root is lthbench's
    default folder (``root_named`` false) and a data set of the matrix is
    ``missing`` from it.
    """
    if option is not None:
        return option
    if setting is not None:
        return setting
    return missing and not root_named


def cache_dir(root: Path) -> Path:
    """A writable folder for files derived from the data under ``root``; not created here.

    It lies under ``$LTHBENCH_CACHE`` (else the user's cache folder), never
    under ``root``, and is distinct per data root so that two roots never share
    derived files.
    """
    base = Path(os.environ[CACHE_ENV]).expanduser() if os.environ.get(CACHE_ENV) else _user_cache()
    resolved = Path(root).expanduser().resolve()
    digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:12]
    return base / "derived" / f"{resolved.name or 'root'}-{digest}"
