"""``python -m vlmkit``: the same command line as the ``vlmkit`` script."""

from vlmkit.cli import main

raise SystemExit(main())
