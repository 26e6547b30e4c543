"""What a sync calls things outside the dataset's files: its lock, artifacts, addresses.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import re

from labelhaul.keys import safe_segment


def lock_name(dataset_id: str) -> str:
    """Return the Prefect global concurrency limit that holds one sync of a dataset."""
    return f"labelhaul-sync-{safe_segment(dataset_id)}"


def artifact_key(prefix: str, dataset_id: str) -> str:
    """Return a Prefect artifact key: lowercase letters, digits and dashes, at most 100."""
    return re.sub(r"[^a-z0-9-]+", "-", f"{prefix}-{dataset_id}".lower())[:100]


def manifest_address(store: str, dataset_id: str, version_id: str) -> str:
    """Return where a version's manifest is, as the run's summary shows it."""
    return f"{store.rstrip('/')}/{safe_segment(dataset_id)}/versions/{version_id}/manifest.json"
