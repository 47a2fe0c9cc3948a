"""``python -m autocompile``: the command-line interface."""

from autocompile.cli import main

raise SystemExit(main())
