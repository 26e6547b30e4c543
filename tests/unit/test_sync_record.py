"""The run record a sync fills in: its mode, error counts, empty exports, outcomes, timings."""

from __future__ import annotations

import errno
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from labelhaul.errors import DiskFullError
from labelhaul.pipeline import AssembledVersion, append_errors
from labelhaul.records import ErrorRecord
from labelhaul.store import CommitResult
from labelhaul.sync.incremental import RunPlan
from labelhaul.sync.plan import plan_sync
from labelhaul.sync.record import (
    EMPTY_RUN_ERRORS_KEPT,
    StageTimer,
    count_errors,
    new_run_record,
    note_empty_export,
    note_failure,
    note_finished,
    note_landed,
    note_plan,
)
from tests.helpers import make_manifest

PARENT = make_manifest(version_id="v000002", defining_filters={"workflow_status": "Done"})


def _errors(staging: Path, kinds: list[str]) -> None:
    append_errors(
        staging,
        (
            ErrorRecord(stage="mask", kind=k, message=f"problem {i}", data_row_id=f"dr{i}")
            for i, k in enumerate(kinds)
        ),
    )


def _record(incremental: bool = True) -> dict[str, Any]:
    return new_run_record(
        run_id="r-1",
        flow_run_id=None,
        flow_run_name="brave-owl",
        dataset_id="p1",
        kind="project",
        incremental=incremental,
        started=datetime(2024, 6, 1, 12, 0, tzinfo=UTC),
    )


def test_a_new_record_says_who_runs_and_the_mode_asked() -> None:
    assert _record() == {
        "run_id": "r-1",
        "flow_run_id": None,
        "flow_run_name": "brave-owl",
        "dataset_id": "p1",
        "kind": "project",
        "mode": "incremental",
        "status": "running",
        "started_at": "2024-06-01T12:00:00+00:00",
    }
    assert _record(incremental=False)["mode"] == "full"


def test_the_plan_sets_the_mode_and_says_why_it_is_not_the_one_asked() -> None:
    record = _record()
    full = plan_sync(incremental=False, kind="project", parent_manifest=PARENT, run_filters={})
    note_plan(
        record,
        RunPlan(full, "warned", "v000002 has no watermark"),
        asked_incremental=True,
        kind="project",
    )
    assert record["mode"] == "merge"  # the run's filters are not the defining ones
    assert record["mode_reason"] is None  # merge is not full: it ran "incremental enough"
    assert record["warnings"] == []
    assert "merged onto v000002" in record["mode_note"]

    record = _record()
    refresh = plan_sync(
        incremental=False,
        kind="project",
        parent_manifest=PARENT,
        run_filters=PARENT.defining_filters or {},
    )
    note_plan(
        record,
        RunPlan(refresh, "warned", "v000002 has no watermark"),
        asked_incremental=True,
        kind="project",
    )
    assert record["mode"] == "full"
    assert record["mode_reason"] == "asked incremental, ran full: v000002 has no watermark"
    assert "mode_note" not in record


def test_errors_are_counted_by_kind(tmp_path: Path) -> None:
    assert count_errors(tmp_path) == {}
    _errors(tmp_path, ["mask_404", "mask_empty", "mask_404"])
    assert count_errors(tmp_path) == {"mask_404": 2, "mask_empty": 1}


def test_an_incremental_run_that_finds_nothing_is_not_a_warning(tmp_path: Path) -> None:
    record = _record()
    plan = plan_sync(
        incremental=True,
        kind="project",
        parent_manifest=PARENT,
        run_filters={"workflow_status": "Done"},
    )
    note_plan(record, RunPlan(plan), asked_incremental=True, kind="project")
    empty = note_empty_export(
        record, plan, parent_version_id="v000002", export_errors=0, staging=tmp_path
    )
    assert not empty.warning
    assert (
        empty.message
        == "no data row changed since the watermark: no new version, latest stays v000002"
    )
    assert record["warnings"] == []
    assert {k: record[k] for k in ("status", "version_id", "current_version_id", "created")} == {
        "status": "completed",
        "version_id": None,
        "current_version_id": "v000002",
        "created": False,
    }
    assert record["reason"] == empty.message and record["empty_export"] is True
    assert (record["counts"], record["errors_by_kind"], record["error_records"]) == ({}, {}, [])
    assert record["rows_exported"] == 0


def test_an_empty_export_with_errors_warns_and_keeps_the_first_errors(tmp_path: Path) -> None:
    record = _record(incremental=False)
    plan = plan_sync(incremental=False, kind="project", parent_manifest=None, run_filters={})
    note_plan(record, RunPlan(plan), asked_incremental=False, kind="project")
    _errors(tmp_path, ["export_error"] * (EMPTY_RUN_ERRORS_KEPT + 5))
    empty = note_empty_export(
        record,
        plan,
        parent_version_id=None,
        export_errors=EMPTY_RUN_ERRORS_KEPT + 5,
        staging=tmp_path,
    )
    assert empty.warning and record["warnings"] == [empty.message]
    assert empty.message.startswith("the export returned 0 data rows and 1005 export error(s)")
    assert record["current_version_id"] is None
    assert record["errors_by_kind"] == {"export_error": EMPTY_RUN_ERRORS_KEPT + 5}
    kept = record["error_records"]
    assert len(kept) == EMPTY_RUN_ERRORS_KEPT == 1000
    assert (kept[0]["data_row_id"], kept[-1]["data_row_id"]) == ("dr0", "dr999")


def test_a_landed_run_records_the_commit_and_the_counts(tmp_path: Path) -> None:
    record = _record()
    result = CommitResult(
        version_id="v000003",
        created=True,
        reason="new content",
        current_version_id="v000003",
        parent_version_id="v000002",
    )
    assembled = AssembledVersion(
        tables={},
        counts={"data_rows": 3, "annotations": 7},
        table_digests={},
        content_digest="abc",
        coco=tmp_path / "coco.json",
        coco_results={},
        category_map={},
        coco_skipped={"polygon_open": 1},
        counts_by_kind={"mask": 7},
        counts_by_class={},
    )
    note_landed(record, result, assembled, errors_by_kind={"mask_404": 1}, rows_exported=3)
    assert {k: v for k, v in record.items() if k not in _record()} == {
        "version_id": "v000003",
        "current_version_id": "v000003",
        "created": True,
        "reason": "new content",
        "counts": {"data_rows": 3, "annotations": 7},
        "counts_by_kind": {"mask": 7},
        "errors_by_kind": {"mask_404": 1},
        "coco_skipped": {"polygon_open": 1},
        "rows_exported": 3,
    }
    assert record["status"] == "completed"


class _TerminationSignal(Exception):
    """Shaped like Prefect's: an exception whose name ends in Signal, with a signal number."""

    signal = 15


def test_a_signal_cancels_the_run_in_the_stage_it_stopped(tmp_path: Path) -> None:
    record = _record()
    timings = {"read_parent": 0.1, "export_wait": 2.0}
    try:
        try:
            raise _TerminationSignal()
        except _TerminationSignal as inner:
            raise ValueError("Task run is not set") from inner
    except ValueError as exc:
        assert note_failure(record, exc, tmp_path, timings) is None
    assert record["status"] == "cancelled"
    assert record["error"] == "cancelled by SIGTERM during export_stream"


def test_an_error_fails_the_run_with_its_type_and_message(tmp_path: Path) -> None:
    record = _record()
    assert note_failure(record, KeyError("part-000003"), tmp_path, {}) is None
    assert (record["status"], record["error"]) == ("failed", "KeyError: 'part-000003'")


def test_a_full_staging_disk_becomes_a_disk_full_error_naming_the_fix(tmp_path: Path) -> None:
    record = _record()
    staging = tmp_path / "labelhaul-p1-x"
    staging.mkdir()
    raised = note_failure(record, OSError(errno.ENOSPC, "No space left"), staging, {})
    assert isinstance(raised, DiskFullError)
    assert "set TMPDIR" in str(raised) and str(tmp_path) in str(raised)
    assert record["status"] == "failed"
    assert record["error"] == f"DiskFullError: {raised}"


def test_the_end_records_timings_and_an_instant() -> None:
    record = _record()
    note_finished(record, {"land": 1.5})
    assert record["timings_s"] == {"land": 1.5}
    finished = datetime.fromisoformat(record["finished_at"])
    assert finished.tzinfo is not None and abs((datetime.now(UTC) - finished).total_seconds()) < 60


def test_each_stage_is_timed_from_the_previous_lap() -> None:
    ticks = iter([10.0, 10.25, 13.0, 13.0004])
    timer = StageTimer(clock=lambda: next(ticks))
    timer.lap("read_parent")
    timer.lap("export_wait")
    timer.lap("export_stream")
    assert timer.timings == {"read_parent": 0.25, "export_wait": 2.75, "export_stream": 0.0}


@pytest.mark.parametrize("stage", ["read_parent", "masks"])
def test_a_signal_before_any_lap_names_the_first_stage(tmp_path: Path, stage: str) -> None:
    record = _record()
    timings = (
        {}
        if stage == "read_parent"
        else {s: 0.0 for s in ("read_parent", "export_wait", "export_stream")}
    )
    note_failure(record, _TerminationSignal(), tmp_path, timings)
    assert record["error"] == f"cancelled by SIGTERM during {stage}"
