"""`python -m ragvisor.faultproxy`: the same command as `ragvisor faultproxy`, same flags."""

import sys

from ragvisor.cli import main

sys.exit(main(["faultproxy", *sys.argv[1:]]))
