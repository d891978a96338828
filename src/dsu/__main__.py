"""``python -m dsu`` runs the command line."""

from dsu.cli.main import main

raise SystemExit(main())
