"""Retention: delete a dataset's old versions and the data no kept version uses.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

from labelhaul.config import load_settings
from labelhaul.flows.common import dataset_lock
from labelhaul.tasks.store import collect_garbage_task
from prefect import flow


@flow(name="gc-dataset")
def gc_dataset(
    dataset_id: str,
    store: str | None = None,
    keep: int = 30,
    older_than_days: float | None = None,
    grace_hours: float = 24.0,
) -> dict[str, object]:
    """Delete a dataset's old versions, then the files and mask blobs no kept version uses.

    Args:
        dataset_id: The project id or model run id the dataset is stored under.
        store: Where datasets land: a local path or s3://bucket/prefix (default: LABELHAUL_STORE).
        keep: Published versions to keep, newest first (at least 1; the latest always stays).
        older_than_days: Delete a version beyond `keep` only when it is this old; prunes run
            records older than this too.
        grace_hours: Keep unreferenced objects younger than this (a sync in progress).
    """
    settings = load_settings()
    # Under the dataset's sync slot: gc never sweeps while a sync of it uploads.
    with dataset_lock(dataset_id):
        return collect_garbage_task(
            settings,
            store or settings.store,
            dataset_id,
            keep=keep,
            older_than_days=older_than_days,
            grace_hours=grace_hours,
        )
