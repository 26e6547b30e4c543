"""The manifest fields a sync records about its new version."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from labelhaul.export_params import DateRange, ExportFilters, ExportParams, WorkflowStatus
from labelhaul.pipeline import AssembledVersion, StageSummary
from labelhaul.sync.plan import plan_sync
from labelhaul.sync.version import (
    changes,
    jsonable,
    manifest_fields,
    next_watermark,
    version_info,
)
from tests.helpers import make_manifest


def test_coco_info_names_the_source_and_the_start() -> None:
    started = datetime(2024, 6, 1, 12, 30, tzinfo=UTC)
    assert version_info("model_run", "mr1", started) == {
        "description": "labelhaul dataset of model_run mr1",
        "date_created": "2024-06-01T12:30:00+00:00",
    }


@pytest.mark.parametrize(
    ("exported", "parent", "expected"),
    [
        ("2024-05-02T10:00:00Z", "2024-05-01T00:00:00.000Z", "2024-05-02T10:00:00.000Z"),
        ("2024-04-30T10:00:00Z", "2024-05-01T00:00:00.000Z", "2024-05-01T00:00:00.000Z"),
        (None, "2024-05-01T00:00:00.000Z", "2024-05-01T00:00:00.000Z"),
        ("2024-05-02T10:00:00+02:00", None, "2024-05-02T08:00:00.000Z"),
        (None, None, None),
    ],
)
def test_the_watermark_moves_forward_only(
    exported: str | None, parent: str | None, expected: str | None
) -> None:
    manifest = None if parent is None else make_manifest(watermark={"cursor": "x", "value": parent})
    mark = next_watermark(StageSummary(max_last_activity_at=exported), manifest)
    assert mark.value == expected
    assert mark.to_dict()["value"] == expected


def test_params_and_filters_become_json_without_their_unset_fields() -> None:
    params = ExportParams(attachments=True, embeddings=False)
    assert jsonable(params) == {
        "attachments": True,
        "metadata_fields": False,
        "data_row_details": False,
        "project_details": False,
        "label_details": False,
        "performance_details": False,
        "interpolated_frames": False,
        "embeddings": False,
        "predictions": False,
        "model_run_details": False,
    }
    filters = ExportFilters(
        last_activity_at=DateRange(datetime(2024, 5, 1, tzinfo=UTC), None),
        workflow_status=WorkflowStatus("Done"),
        batch_ids=["b2", "b1"],
    )
    assert jsonable(filters) == {
        "last_activity_at": {"start": "2024-05-01T00:00:00+00:00"},
        "workflow_status": "Done",
        "batch_ids": ["b2", "b1"],
    }
    assert jsonable(None) is None
    assert jsonable({1: Path("/x")}) == {"1": "/x"}


def test_changes_are_row_deltas_against_the_parent() -> None:
    assert changes(None, {"data_rows": 3}) == {"parent": None, "counts_delta": {"data_rows": 3}}
    parent = make_manifest(version_id="v000007", counts={"data_rows": 5, "embeddings": 2})
    assert changes(parent, {"data_rows": 6, "annotations": 4}) == {
        "parent": "v000007",
        "counts_delta": {"annotations": 4, "data_rows": 1, "embeddings": -2},
    }


def test_manifest_fields_of_an_incremental_run(tmp_path: Path) -> None:
    parent = make_manifest(
        version_id="v000001",
        defining_filters={},
        watermark={
            "cursor": "data_row.details.last_activity_at",
            "value": "2024-05-01T00:00:00.000Z",
        },
        counts={"data_rows": 2},
    )
    plan = plan_sync(incremental=True, kind="project", parent_manifest=parent, run_filters={})
    summary = StageSummary(
        rows=3, bad_lines=1, export_errors=2, max_last_activity_at="2024-05-03T00:00:00Z"
    )
    assembled = AssembledVersion(
        tables={},
        counts={"data_rows": 4},
        table_digests={"data_rows": "sha256:1"},
        content_digest="c",
        coco=tmp_path / "coco.json",
        coco_results={},
        category_map={"cat": {"id": 1, "name": "cat"}},
        coco_skipped={},
        counts_by_kind={"bbox": 3},
        counts_by_class={"cat": 3},
    )
    fields = manifest_fields(
        kind="project",
        dataset_id="p1",
        run_id="r-9",
        flow_run_id="f-9",
        plan=plan,
        params=ExportParams(),
        filters=ExportFilters(
            last_activity_at=DateRange(datetime(2024, 4, 30, 23, tzinfo=UTC), None)
        ),
        export_task_ids=["t1", "t2"],
        summary=summary,
        assembled=assembled,
        parent_manifest=parent,
        masks={"instances": 5, "errors": 1},
        errors_by_kind={"bad_line": 1},
    )
    assert fields == {
        "source": {"kind": "project", "id": "p1"},
        "counts_by_source": {},
        "mode": "incremental",
        "mode_note": None,
        "defining_filters": {},
        "export": {
            "task_ids": ["t1", "t2"],
            "params": jsonable(ExportParams()),
            "filters": {"last_activity_at": {"start": "2024-04-30T23:00:00+00:00"}},
            "rows_exported": 3,
            "bad_lines": 1,
            "export_errors": 2,
        },
        "counts": {"data_rows": 4},
        "counts_by_kind": {"bbox": 3},
        "counts_by_class": {"cat": 3},
        "table_digests": {"data_rows": "sha256:1"},
        "watermark": {
            "cursor": "data_row.details.last_activity_at",
            "value": "2024-05-03T00:00:00.000Z",
        },
        "category_map": {"cat": {"id": 1, "name": "cat"}},
        "masks": {"instances": 5, "errors": 1},
        "errors_by_kind": {"bad_line": 1},
        "run_id": "r-9",
        "flow_run_id": "f-9",
        "changes": {"parent": "v000001", "counts_delta": {"data_rows": 2}},
    }
