"""lthbench: lottery-ticket experiments as a comparison matrix, with statistical reports."""

import pluggy

__version__ = "0.1.0"

#: Decorator for plugin hook implementations (see :mod:`lthbench.hookspecs`).
hookimpl = pluggy.HookimplMarker("lthbench")

__all__ = ["__version__", "hookimpl"]
