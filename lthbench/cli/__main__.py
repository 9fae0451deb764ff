"""``python -m lthbench.cli``: the command line."""

from lthbench.cli import main

raise SystemExit(main())
