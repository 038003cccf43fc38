"""`python -m ragvisor`: the same entry point as the `ragvisor` console script."""

import sys

from ragvisor.cli import main

sys.exit(main())
