"""A Labelbox emulator: a loopback HTTP server the unmodified labelbox SDK can export from.

For offline development, CI and the demo. In Python::

    from labelhaul.emulator import EmulatorServer

    with EmulatorServer(chunk_bytes=64_000) as emu:          # free loopback port
        client = labelbox.Client(emu.api_key, endpoint=emu.graphql_url,
                                 rest_endpoint=emu.rest_url)
        pid = emu.add_synthetic_project(n_rows=100, instances=4, seed=1)
        task = client.get_project(pid).export(params={"label_details": True})
        emu.faults.set("chunk", "5xx", rate=0.2)               # see `faults`
        ...

Served content: the seed's sample project (`seed_project_id`) and model run
(`seed_model_run_id`), synthetic projects (`add_synthetic_project`, pixels checkable
with `ground_truth_masks(emu.synthetic_spec(pid), row)`), and export files made elsewhere
(`load_project(export_path, masks_dir)`). Knobs: `chunk_bytes`, `split_lines`,
`user_timezone`, `task_seconds`, `add_error_lines(source_id, lines)`, `faults`,
`request_log`, `reset()`. `labelhaul emulator` runs one from the command line.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
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
