"""Parameter types the flows expose in the Prefect UI form.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

from labelhaul.export_params import WorkflowStatus
from labelhaul.syncplan import SyncMode

__all__ = ["SyncMode", "WorkflowStatus"]
