"""What a sync run really does to a dataset: refresh it, merge into it, or leave it alone.

A dataset is defined by the filters it is synced with: the deployment's default
parameters, recorded in each manifest as `defining_filters` (the canonical form of
`export_params.filters_key`; `{}` is the whole project). Only a full sync with exactly
those filters may remove rows (deletions, rows that left the filters). A full sync with
other or extra filters (a typo, an ad-hoc run from the UI) re-exports the matching rows and
merges them like an incremental run, so `latest` never becomes a subset by accident.
Changing the defining filters is explicit (`redefine`), never a side effect.

Pure logic: the flow passes in what it read; nothing here talks to Labelbox or a store.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from labelhaul.manifest import Manifest


class SyncMode(StrEnum):
    """How much to export: rows active since the watermark, or every row (a refresh).

    The one list of modes: the flow parameter, the projects file's `mode` and the
    deployments' schedules all read it.
    """

    incremental = "incremental"
    full = "full"


FULL = SyncMode.full.value
INCREMENTAL = SyncMode.incremental.value
MERGE = "merge"  # a plan's mode, not one a run asks for: a full export of other filters, merged


@dataclass(frozen=True)
class SyncPlan:
    """How one run treats the dataset.

    Attributes:
        mode: `full` (a refresh, may remove rows), `incremental` (rows active since the
            watermark, merged) or `merge` (a full export of other filters, merged).
        merge_onto_parent: merge the exported rows onto the parent version's rows.
        narrow_to_watermark: export only rows active since the parent's watermark.
        defining_filters: the dataset's defining filters, recorded in the new manifest.
        filters_match: the run's filters are the defining filters.
        note: why the run is not the plain mode that was asked for, or None.
    """

    mode: str
    merge_onto_parent: bool
    narrow_to_watermark: bool
    defining_filters: dict[str, Any]
    filters_match: bool
    note: str | None = None


def _show(filters: Mapping[str, Any]) -> str:
    return json.dumps(dict(filters), sort_keys=True) if filters else "none (the whole project)"


def plan_sync(
    *,
    incremental: bool,
    kind: str,
    parent_manifest: Manifest | None,
    run_filters: Mapping[str, Any],
    deployment_filters: Mapping[str, Any] | None = None,
    redefine: bool = False,
) -> SyncPlan:
    """Return what a run with these filters does to the dataset.

    Args:
        incremental: the run asked for incremental mode.
        kind: `project` or `model_run` (model runs take no filters: always a full refresh).
        parent_manifest: the latest version's manifest, None for the first version.
        run_filters: `filters_key` of the run's filters, before any watermark narrowing.
        deployment_filters: `filters_key` of the deployment's default parameters when the
            run belongs to a deployment; they define a dataset that has no recorded ones.
        redefine: make the run's filters the dataset's defining filters (the explicit way
            to change them); a full run then refreshes to exactly these rows.
    """
    run = dict(run_filters)
    if kind != "project":
        return SyncPlan(FULL, False, False, {}, True)
    parent = parent_manifest
    recorded = parent.defining_filters if parent is not None else None
    if redefine:
        defining = run
    elif recorded is not None:
        defining = dict(recorded)
    elif deployment_filters is not None:
        defining = dict(deployment_filters)
    elif parent is not None:
        # A version from before filters were recorded: read it as the whole project, so a
        # filtered full run merges (keeps rows) rather than shrinking the dataset.
        defining = {}
    else:
        defining = run  # the first version defines the dataset
    match = run == defining
    redefined = (
        f"Defining filters redefined by this run: {_show(run)} (were {_show(recorded or {})})."
        if redefine and recorded is not None and dict(recorded) != run
        else None
    )
    differs = (
        None
        if match
        else f"This run's filters {_show(run)} are not the dataset's defining filters "
        f"{_show(defining)}"
    )
    if parent is None:
        asked = "Asked incremental, ran full: no parent version." if incremental else None
        subset = f"{differs}: this first version holds only the matching rows." if differs else None
        note = " ".join(n for n in (asked, subset, redefined) if n) or None
        return SyncPlan(FULL, False, False, defining, match, note)
    if incremental:
        note = f"{differs}: the matching rows were merged in." if differs else redefined
        return SyncPlan(INCREMENTAL, True, True, defining, match, note)
    if match:
        return SyncPlan(FULL, False, False, defining, match, redefined)
    note = (
        f"Full sync with other filters, merged: {differs}, so the matching rows were "
        f"re-exported and merged onto {parent.version_id}; rows outside them were kept. To make "
        "these filters the dataset's own, sync again with redefine_filters (--redefine-filters)."
    )
    return SyncPlan(MERGE, True, False, defining, match, note)


def empty_export_message(
    plan: SyncPlan, parent_version_id: str | None, export_errors: int = 0
) -> str:
    """Return what a run whose export held no data row says (it makes no new version)."""
    kept = (
        f"latest stays {parent_version_id}"
        if parent_version_id
        else "the dataset has no version yet"
    )
    if export_errors:
        return (
            f"the export returned 0 data rows and {export_errors} export error(s): no new "
            f"version, {kept}; the errors are in the run record"
        )
    if plan.mode == INCREMENTAL:
        return f"no data row changed since the watermark: no new version, {kept}"
    hint = (
        ""
        if plan.filters_match
        else " Check the filters (a mistyped batch id, workflow status or date?)."
    )
    return f"the export returned 0 data rows: no new version, {kept}.{hint}"
