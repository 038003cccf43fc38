"""`python -m ragvisor.cli`: the same as `ragvisor` (and `python -m ragvisor`)."""

import sys

from ragvisor.cli import main

sys.exit(main())
