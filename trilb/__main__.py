"""`python -m trilb` runs the command line."""

from __future__ import annotations

import sys

from trilb.cli import main

sys.exit(main())
