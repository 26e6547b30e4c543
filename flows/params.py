"""Parameter types the flows expose in the Prefect UI form.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

from enum import StrEnum

from labelhaul.export_params import WorkflowStatus

__all__ = ["SyncMode", "WorkflowStatus"]


class SyncMode(StrEnum):
    """How much to export."""

    incremental = "incremental"
    full = "full"
