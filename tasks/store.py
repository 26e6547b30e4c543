"""Prefect tasks around the versioned store: read the parent, assemble, land, record.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from labelhaul.config import Settings
from labelhaul.tasks.export import _retry_unless_terminal
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from labelhaul.manifest import Manifest
from labelhaul.maskpool import sync_pool
from labelhaul.pipeline import (
    AssembledVersion,
    assemble_version,
    fetch_parent_tables,
    land_version,
    read_data_row_ids,
    write_known_blobs,
)
from labelhaul.runs import begin_run_record, end_run_record, mark_stale_runs
from labelhaul.storage import open_object_store
from labelhaul.store import CommitResult, DatasetStore, LatestPointer
from labelhaul.writecheck import ensure_conditional_writes


def open_store(
    settings: Settings, store_uri: str, dataset_id: str, *, check: bool = True
) -> DatasetStore:
    """Open one dataset of the store (fails fast, naming the fix, when it is unreachable).

    `check=False` skips the probe: for tasks of a run that already opened the store.
    """
    return DatasetStore(open_object_store(store_uri, settings, check=check), dataset_id)


@task(
    name="read-parent",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=_retry_unless_terminal,
)
def read_parent_task(
    settings: Settings, store_uri: str, dataset_id: str
) -> tuple[LatestPointer | None, Manifest | None]:
    """Read `_latest.json` (with its etag, for the commit's compare-and-swap) and its manifest.

    First makes sure the store honours conditional writes (checked once, remembered there).
    """
    store = open_store(settings, store_uri, dataset_id)
    how = ensure_conditional_writes(store.objects, single_writer=settings.single_writer)
    if how == "single-writer":
        get_run_logger().warning(
            "LABELHAUL_SINGLE_WRITER is set: conditional writes are not checked, so a second "
            "sync writing %s at the same time could overwrite a version",
            store_uri,
        )
    parent = store.latest()
    manifest = store.load_manifest(parent.version_id) if parent else None
    return parent, manifest


@task(
    name="list-known-blobs",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=_retry_unless_terminal,
)
def known_blobs_task(
    settings: Settings,
    store_uri: str,
    dataset_id: str,
    parent_manifest: Manifest | None,
    staging: Path,
    verify: bool = False,
) -> int:
    """List the blobs the mask stage may skip without asking the store.

    An incremental run lists the parent's; a full sync (`verify`) lists the store's own, so
    a blob gone from the store is uploaded again rather than listed.
    """
    # read-parent probed the store for this run: no second probe.
    store = open_store(settings, store_uri, dataset_id, check=False)
    return write_known_blobs(store, parent_manifest, staging, verify=verify)


@task(
    name="assemble-version",
    cache_policy=NO_CACHE,
    retries=1,
    retry_delay_seconds=[5],
    retry_condition_fn=_retry_unless_terminal,
)
def assemble_task(
    settings: Settings,
    store_uri: str,
    dataset_id: str,
    staging: Path,
    parts: list[str],
    parent_manifest: Manifest | None,
    incremental: bool,
    info: dict[str, Any],
) -> AssembledVersion:
    """Write the version's tables (merged with the parent's when incremental) and COCO files."""
    parent_tables = None
    replaced = None
    if incremental and parent_manifest is not None:
        store = open_store(settings, store_uri, dataset_id, check=False)
        parent_tables = fetch_parent_tables(store, parent_manifest, staging / "parent")
        replaced = read_data_row_ids(staging)
    category_map = dict(parent_manifest.category_map or {}) if parent_manifest else {}
    # The sync's mask workers, idle by now when it has them, build the parts' tables and
    # digest them while this process writes the tables and COCO.
    pool = sync_pool()
    return assemble_version(
        staging,
        parts,
        parent_tables=parent_tables,
        replaced_data_row_ids=replaced,
        category_map=category_map,
        info=info,
        parent_manifest=parent_manifest if incremental else None,
        max_segments=settings.max_table_segments,
        compact_fraction=settings.compact_fraction,
        label_policy=settings.label_policy,
        offload=pool.submit if pool is not None else None,
    )


@task(
    name="land-version",
    cache_policy=NO_CACHE,
    retries=3,
    retry_delay_seconds=[2, 5, 15],
    retry_condition_fn=_retry_unless_terminal,
)
def land_version_task(
    settings: Settings,
    store_uri: str,
    dataset_id: str,
    parent: LatestPointer | None,
    staging: Path,
    assembled: AssembledVersion,
    fields: dict[str, Any],
    since: datetime | None = None,
) -> CommitResult:
    """Upload the files create-only, then commit the manifest and move `_latest.json`.

    `since` (the run's start) lets the commit notice a gc that ran meanwhile.
    """
    logger = get_run_logger()
    store = open_store(settings, store_uri, dataset_id, check=False)
    result = land_version(
        store,
        parent,
        staging,
        assembled,
        fields,
        since=since,
        store_delta_coco=settings.store_delta_coco,
    )
    if result.created and result.version_id:
        where = store.uri_for(store.manifest_key(result.version_id))
        logger.info("Committed %s at %s", result.version_id, where)
    else:
        logger.info("No new version: %s", result.reason)
    return result


@task(
    name="begin-run-record",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=_retry_unless_terminal,
)
def begin_run_task(
    settings: Settings, store_uri: str, dataset_id: str, run_id: str, record: dict[str, Any]
) -> list[str]:
    """Record this run as running; mark runs that died without an outcome as killed."""
    logger = get_run_logger()
    store = open_store(settings, store_uri, dataset_id)
    begin_run_record(store, run_id, record)
    killed = mark_stale_runs(store, run_id)
    if killed:
        logger.warning(
            "Marked %d run(s) that died without an outcome as killed: %s",
            len(killed),
            ", ".join(killed),
        )
    return killed


# An unwritable store was retried here three times (21 s) after the run had already failed
# on it: terminal errors are never retried, by any task.
@task(
    name="write-run-record",
    cache_policy=NO_CACHE,
    retries=3,
    retry_delay_seconds=[1, 5, 15],
    retry_condition_fn=_retry_unless_terminal,
)
def write_run_record_task(
    settings: Settings, store_uri: str, dataset_id: str, run_id: str, record: dict[str, Any]
) -> str:
    """Write `runs/<run_id>.json` (the record of this run, whatever its outcome)."""
    return write_run_record_now(settings, store_uri, dataset_id, run_id, record)


def write_run_record_now(
    settings: Settings, store_uri: str, dataset_id: str, run_id: str, record: dict[str, Any]
) -> str:
    """The same without a task run: for a run Prefect is tearing down (SIGTERM)."""
    store = open_store(settings, store_uri, dataset_id)
    return end_run_record(store, run_id, record)


@task(
    name="collect-garbage",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=[5, 30],
    retry_condition_fn=_retry_unless_terminal,
)
def collect_garbage_task(
    settings: Settings,
    store_uri: str,
    dataset_id: str,
    *,
    keep: int,
    older_than_days: float | None,
    grace_hours: float,
) -> dict[str, Any]:
    """Run `labelhaul.gc.collect_garbage` on one dataset and return its report."""
    from labelhaul.gc import collect_garbage, has_dataset

    logger = get_run_logger()
    store = open_store(settings, store_uri, dataset_id)
    if not has_dataset(store):
        logger.info("No dataset at %s yet: nothing to collect", store.uri_for(""))
        return {"latest": None, "deleted_versions": []}
    report = collect_garbage(
        store, keep=keep, older_than_days=older_than_days, grace_hours=grace_hours
    ).to_dict()
    logger.info(
        "gc of %s: deleted %d version(s), %s file(s), %s blob(s)",
        store.uri_for(""),
        len(report.get("deleted_versions") or []),
        report.get("deleted_files"),
        report.get("deleted_blobs"),
    )
    return report
