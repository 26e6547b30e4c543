"""The incremental cursor: where an export starts, when a run cannot be incremental.

The watermark (the manifest's `watermark`) is the latest `last_activity_at` of the rows a
version holds (`labelhaul.tables.compute_watermark`). An incremental run exports the rows
active since it, less an overlap window; a parent without one, or with blobs known lost,
gets a full sync instead.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from labelhaul.export_params import DateRange, ExportFilters
from labelhaul.manifest import Manifest
from labelhaul.pipeline import why_not_incremental
from labelhaul.sync.plan import SyncPlan, plan_sync
from labelhaul.timestamps import parse_timestamp
from labelhaul.verify import MISSING_BLOBS_FULL


def parent_watermark(parent_manifest: Manifest | None) -> str | None:
    """Return the parent version's watermark value; None without a parent or a watermark."""
    if parent_manifest is None or parent_manifest.watermark is None:
        return None
    return parent_manifest.watermark.value


def incremental_filters(
    filters: ExportFilters, watermark: str | None, overlap: timedelta
) -> ExportFilters:
    """Narrow `filters` to rows active since the watermark minus the overlap window."""
    if watermark is None:
        return filters
    since = parse_timestamp(watermark)
    if since is None:
        return filters
    # Rows at the watermark itself are in the parent already: with no overlap, start just
    # after it (Labelbox filters whole seconds).
    start = since - overlap if overlap > timedelta(0) else since + timedelta(seconds=1)
    current = filters.last_activity_at
    if current is not None and current.start is not None:
        user_start = current.start
        if isinstance(user_start, str):
            parsed = parse_timestamp(user_start)
            user_start = parsed if parsed is not None else start
        start = max(start, user_start)
    end = current.end if current is not None else None
    return replace(filters, last_activity_at=DateRange(start=start, end=end))


def export_filters(
    plan: SyncPlan,
    filters: ExportFilters | None,
    parent_manifest: Manifest | None,
    overlap: timedelta,
) -> ExportFilters | None:
    """Return the filters the export runs with: the run's, narrowed when the plan says so."""
    if not plan.narrow_to_watermark:
        return filters
    return incremental_filters(
        filters or ExportFilters(), parent_watermark(parent_manifest), overlap
    )


@dataclass(frozen=True)
class RunPlan:
    """The plan a run follows, and why it is a full sync when incremental was planned.

    Attributes:
        plan: what the run does to the dataset.
        warning: why an incremental run cannot be one (the flow logs it), or None.
        fallback: the same in a few words, for the run record's `mode_reason`.
    """

    plan: SyncPlan
    warning: str | None = None
    fallback: str | None = None


def plan_run(
    *,
    incremental: bool,
    kind: str,
    parent_version_id: str | None,
    parent_manifest: Manifest | None,
    run_filters: Mapping[str, Any],
    deployment_filters: Mapping[str, Any] | None,
    redefine: bool,
    blobs_lost: Callable[[], bool],
) -> RunPlan:
    """Plan the run (`plan_sync`), falling back to full when it cannot narrow to a watermark.

    Only a full export repairs a parent with no watermark or with blobs known lost;
    `blobs_lost` (a read of the store) is asked only when the plan would narrow.
    """
    args: dict[str, Any] = dict(
        kind=kind,
        parent_manifest=parent_manifest,
        run_filters=run_filters,
        deployment_filters=deployment_filters,
        redefine=redefine,
    )
    plan = plan_sync(incremental=incremental, **args)
    if not plan.narrow_to_watermark:
        return RunPlan(plan)
    blocker = why_not_incremental(parent_manifest)
    if blocker is None and blobs_lost():
        blocker = MISSING_BLOBS_FULL
    if blocker is None:
        return RunPlan(plan)
    fallback = (
        "its blobs are known lost"
        if blocker == MISSING_BLOBS_FULL
        else f"{parent_version_id or 'the parent'} has no watermark"
    )
    return RunPlan(plan_sync(incremental=False, **args), blocker, fallback)
