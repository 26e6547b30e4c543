"""A Labelbox emulator: a loopback HTTP server the unmodified labelbox SDK can export from.

For offline development, CI and the demo. See `server.EmulatorServer` for the routes and
`faults` for the knobs; `labelhaul emulator` runs one from the command line.
"""

from __future__ import annotations

from labelhaul.emulator.faults import FaultPlan
from labelhaul.emulator.server import (
    DEFAULT_API_KEY,
    EmulatorServer,
    RequestLog,
    RequestLogEntry,
)
from labelhaul.emulator.synthetic import SyntheticSpec, ground_truth_masks

__all__ = [
    "DEFAULT_API_KEY",
    "EmulatorServer",
    "FaultPlan",
    "RequestLog",
    "RequestLogEntry",
    "SyntheticSpec",
    "ground_truth_masks",
]
