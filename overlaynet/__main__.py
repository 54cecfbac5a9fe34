"""`python -m overlaynet` is the same as the `overlaynet` command."""

from overlaynet.cli import main

raise SystemExit(main())
