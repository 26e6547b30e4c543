"""Parameter types the flows expose in the Prefect UI form."""

from __future__ import annotations

from enum import StrEnum

from labelhaul.export_params import WorkflowStatus

__all__ = ["SyncMode", "WorkflowStatus"]


class SyncMode(StrEnum):
    """How much to export."""

    incremental = "incremental"
    full = "full"
