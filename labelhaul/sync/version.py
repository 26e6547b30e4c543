"""The new version's manifest fields, from what the run planned, exported and assembled.

`labelhaul.pipeline.land_version` writes them into the manifest beside the file list.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from labelhaul.export_params import ExportFilters, ExportParams
from labelhaul.manifest import Manifest
from labelhaul.pipeline import AssembledVersion, StageSummary
from labelhaul.sync.incremental import parent_watermark
from labelhaul.sync.plan import SyncPlan
from labelhaul.sync.report import count_by_source, source_info
from labelhaul.tables import Watermark, compute_watermark


def version_info(kind: str, dataset_id: str, started: datetime) -> dict[str, Any]:
    """Return the COCO files' `info`: what the dataset is of, and when its run started."""
    return {
        "description": f"labelhaul dataset of {kind} {dataset_id}",
        "date_created": started.isoformat(),
    }


def next_watermark(summary: StageSummary, parent_manifest: Manifest | None) -> Watermark:
    """Return the new version's watermark: the latest activity exported, or the parent's."""
    return compute_watermark([summary.max_last_activity_at], parent_watermark(parent_manifest))


def manifest_fields(
    *,
    kind: str,
    dataset_id: str,
    run_id: str,
    flow_run_id: str | None,
    plan: SyncPlan,
    params: ExportParams,
    filters: ExportFilters | None,
    export_task_ids: Sequence[str],
    summary: StageSummary,
    assembled: AssembledVersion,
    parent_manifest: Manifest | None,
    masks: dict[str, int],
    errors_by_kind: dict[str, int],
    media: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Return the manifest fields a sync records about its version (beside its files).

    Args:
        filters: the filters the export ran with (narrowed to the watermark when it was).
        masks: the mask stage's totals (`instances`, `errors`).
        media: the media stage's totals (downloaded, reused, failed, bytes_downloaded), None
            when the run did not include media.
    """
    fields: dict[str, Any] = {} if media is None else {"media": dict(media)}
    return fields | {
        "source": source_info(kind, dataset_id, assembled.tables),
        "counts_by_source": count_by_source(assembled.tables.get("annotations")),
        "mode": plan.mode,
        "mode_note": plan.note,
        "defining_filters": plan.defining_filters,
        "export": {
            "task_ids": list(export_task_ids),
            "params": jsonable(params),
            "filters": jsonable(filters),
            "rows_exported": summary.rows,
            "bad_lines": summary.bad_lines,
            "export_errors": summary.export_errors,
        },
        "counts": assembled.counts,
        "counts_by_kind": assembled.counts_by_kind,
        "counts_by_class": assembled.counts_by_class,
        "table_digests": assembled.table_digests,
        "watermark": next_watermark(summary, parent_manifest).to_dict(),
        "category_map": assembled.category_map,
        "masks": dict(masks),
        "errors_by_kind": errors_by_kind,
        "run_id": run_id,
        "flow_run_id": flow_run_id,
        "changes": changes(parent_manifest, assembled.counts),
    }


def jsonable(obj: Any) -> Any:
    """Turn params/filters dataclasses into plain JSON values for the manifest.

    Fields that are unset (None, empty) are left out.
    """
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, datetime):
        return obj.isoformat()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name: jsonable(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if getattr(obj, f.name) not in (None, {}, ())
        }
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set):
        return [jsonable(v) for v in obj]
    return str(obj)


def changes(parent_manifest: Manifest | None, counts: dict[str, int]) -> dict[str, Any]:
    """Return the manifest's `changes`: the parent version and each table's row delta."""
    if parent_manifest is None:
        return {"parent": None, "counts_delta": dict(counts)}
    before = parent_manifest.counts or {}
    return {
        "parent": parent_manifest.version_id,
        "counts_delta": {
            t: counts.get(t, 0) - int(before.get(t, 0)) for t in sorted(set(counts) | set(before))
        },
    }
