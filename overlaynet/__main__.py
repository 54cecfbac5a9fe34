"""`python -m overlaynet` is the same as the `overlaynet` command."""

from overlaynet.cli.main import main

raise SystemExit(main())
