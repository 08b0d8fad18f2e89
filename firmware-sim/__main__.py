"""``python -m xiaozhi_sim device|fleet|scenario ...``: the same as ``xiaozhi sim ...``."""
# ruff: noqa: N999 - the folder is named by design.md; it installs as xiaozhi_sim

import sys

from xiaozhi_sim.cli import main

sys.exit(main())
