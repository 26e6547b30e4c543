"""The incremental cursor: the export's filter since the watermark, and the full fallback."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from labelhaul.export_params import DateRange, ExportFilters
from labelhaul.manifest import Manifest
from labelhaul.sync.incremental import (
    export_filters,
    incremental_filters,
    parent_watermark,
    plan_run,
)
from labelhaul.sync.plan import plan_sync
from labelhaul.verify import MISSING_BLOBS_FULL
from tests.helpers import make_manifest

MARK = "2024-04-08T16:34:01.000Z"


def _parent(watermark: str | None = MARK) -> Manifest:
    cursor = "data_row.details.last_activity_at"
    return make_manifest(
        version_id="v000004", defining_filters={}, watermark={"cursor": cursor, "value": watermark}
    )


def _never() -> bool:
    raise AssertionError("the store was asked about lost blobs by a run that does not narrow")


def test_parent_watermark_is_the_manifests_value() -> None:
    assert parent_watermark(None) is None
    assert parent_watermark(make_manifest(version_id="v000001")) is None
    assert parent_watermark(make_manifest(watermark=None)) is None
    assert parent_watermark(_parent()) == MARK


@pytest.mark.parametrize(
    ("watermark", "user_start", "expected"),
    [
        (MARK, None, datetime(2024, 4, 8, 15, 34, 1, tzinfo=UTC)),
        (None, None, None),
        (MARK, datetime(2024, 5, 1, tzinfo=UTC), datetime(2024, 5, 1, tzinfo=UTC)),
    ],
)
def test_incremental_filter_starts_an_overlap_before_the_watermark(
    watermark: str | None, user_start: datetime | None, expected: datetime | None
) -> None:
    base = ExportFilters(last_activity_at=DateRange(user_start, None) if user_start else None)
    out = incremental_filters(base, watermark, timedelta(hours=1))
    start = out.last_activity_at.start if out.last_activity_at else None
    assert start == expected


def test_without_overlap_the_export_starts_a_second_after_the_watermark() -> None:
    end = datetime(2024, 9, 1, tzinfo=UTC)
    base = ExportFilters(last_activity_at=DateRange(None, end), workflow_status="Done")
    out = incremental_filters(base, MARK, timedelta(0))
    assert out.last_activity_at == DateRange(datetime(2024, 4, 8, 16, 34, 2, tzinfo=UTC), end)
    assert out.workflow_status == "Done"


def test_export_filters_narrow_only_when_the_plan_says_so() -> None:
    run = ExportFilters(workflow_status="Done")
    full = plan_sync(incremental=False, kind="project", parent_manifest=_parent(), run_filters={})
    assert export_filters(full, run, _parent(), timedelta(hours=1)) is run
    assert export_filters(full, None, _parent(), timedelta(hours=1)) is None
    inc = plan_sync(incremental=True, kind="project", parent_manifest=_parent(), run_filters={})
    narrowed = export_filters(inc, None, _parent(), timedelta(minutes=30))
    assert narrowed == ExportFilters(
        last_activity_at=DateRange(datetime(2024, 4, 8, 16, 4, 1, tzinfo=UTC), None)
    )


def _plan_run(
    parent: Manifest | None, *, incremental: bool = True, blobs_lost: Any = _never
) -> Any:
    return plan_run(
        incremental=incremental,
        kind="project",
        parent_version_id=parent.version_id if parent else None,
        parent_manifest=parent,
        run_filters={},
        deployment_filters=None,
        redefine=False,
        blobs_lost=blobs_lost,
    )


def test_an_incremental_run_onto_a_parent_with_a_watermark_stays_incremental() -> None:
    run = _plan_run(_parent(), blobs_lost=lambda: False)
    assert (run.plan.mode, run.plan.narrow_to_watermark, run.plan.merge_onto_parent) == (
        "incremental",
        True,
        True,
    )
    assert run.warning is None and run.fallback is None


def test_a_parent_without_a_watermark_gets_a_full_sync() -> None:
    run = _plan_run(_parent(watermark=None), blobs_lost=lambda: False)
    assert (run.plan.mode, run.plan.narrow_to_watermark, run.plan.merge_onto_parent) == (
        "full",
        False,
        False,
    )
    assert run.fallback == "v000004 has no watermark"
    assert run.warning is not None and run.warning.startswith(
        "cannot sync incrementally: v000004 has no watermark"
    )


def test_blobs_known_lost_get_a_full_sync() -> None:
    run = _plan_run(_parent(), blobs_lost=lambda: True)
    assert run.plan.mode == "full" and not run.plan.narrow_to_watermark
    assert run.warning == MISSING_BLOBS_FULL
    assert run.fallback == "its blobs are known lost"


@pytest.mark.parametrize("incremental", [True, False])
def test_a_run_that_does_not_narrow_never_asks_about_lost_blobs(incremental: bool) -> None:
    first = _plan_run(None, incremental=incremental)
    assert first.plan.mode == "full" and first.warning is None and first.fallback is None
    if not incremental:
        refresh = _plan_run(_parent(), incremental=False)
        assert refresh.plan.mode == "full" and refresh.warning is None
