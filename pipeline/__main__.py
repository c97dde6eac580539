"""``python -m pipeline``: the ScanLens command line."""

from __future__ import annotations

import sys

from pipeline.cli import main

sys.exit(main())
