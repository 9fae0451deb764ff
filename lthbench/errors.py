"""Errors a user can cause. The CLI prints them as one sentence and exits with code 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A mistake in input the user controls: config, plugin names, data location."""


class ConfigError(UserError):
    """A configuration file that cannot be used as written."""


class PluginError(UserError):
    """A plugin that cannot be loaded, clashes with another, or is not installed."""


class DataNotFound(UserError):
    """A data set whose files are not where lthbench looked."""


def suggest(value: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean X?)' for the closest choice, or '' when none is close."""
    match = difflib.get_close_matches(value, list(choices), n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""
