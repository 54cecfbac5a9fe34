"""`python -m overlaynet.agent`: run one host's agent."""

import sys

from overlaynet.agent.daemon import main

sys.exit(main())
