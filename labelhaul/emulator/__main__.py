"""`python -m labelhaul.emulator [options]`: the same as `labelhaul emulator [options]`."""

from __future__ import annotations

import sys

from labelhaul.emulator.cli import main

sys.exit(main())
