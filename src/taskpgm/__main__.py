"""``python -m taskpgm`` runs the command line."""

from __future__ import annotations

import sys

from taskpgm.cli import main

sys.exit(main())
