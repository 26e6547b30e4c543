"""The run's own account of itself: state name, summary lines, mask progress files."""

from __future__ import annotations

from pathlib import Path

from labelhaul.pipeline import append_errors
from labelhaul.records import ErrorRecord
from labelhaul.sync.report import (
    completed_name,
    explain_mode,
    first_error_rows,
    md_counts,
    read_mask_progress,
    summary_markdown,
    summary_title,
    write_part_progress,
)


def test_state_name_and_title_lead_with_the_problem_count() -> None:
    assert completed_name({"errors_by_kind": {}}) is None
    assert completed_name({"errors_by_kind": {"a": 1}}) == "Completed with 1 problem"
    assert completed_name({"errors_by_kind": {"a": 4, "b": 3}}) == "Completed with 7 problems"
    assert (
        summary_title("p1", {"errors_by_kind": {"a": 7}}) == "# 7 problems: labelhaul sync of `p1`"
    )
    assert summary_title("p1", {}).startswith("# No problems")


def test_mode_change_is_explained() -> None:
    assert explain_mode(asked_incremental=False, ran_incremental=False, kind="project") is None
    assert explain_mode(asked_incremental=True, ran_incremental=True, kind="project") is None
    assert explain_mode(asked_incremental=True, ran_incremental=False, kind="project") == (
        "asked incremental, ran full: no parent version"
    )


def test_seconds_are_headed_seconds() -> None:
    assert "| | seconds |" in md_counts("Seconds per stage", {"masks": 1.5}, unit="seconds")


def test_progress_files_sum_over_running_parts(tmp_path: Path) -> None:
    (tmp_path / "parts").mkdir()
    write_part_progress(tmp_path, "part-1", 3)
    write_part_progress(tmp_path, "part-2", 2)
    write_part_progress(tmp_path, "part-2", 4)
    assert read_mask_progress(tmp_path, ["part-1", "part-2", "part-3"]) == 7


def test_the_summary_says_what_landed_where_and_in_what_mode() -> None:
    record = {
        "mode": "full",
        "mode_reason": "asked incremental, ran full: v000001 has no watermark",
        "mode_note": "Defining filters redefined by this run.",
        "warnings": ["the export returned 0 data rows"],
        "created": True,
        "version_id": "v000002",
        "current_version_id": "v000002",
        "rows_exported": 12,
        "counts": {"data_rows": 12},
        "errors_by_kind": {"mask_404": 2},
    }
    md = summary_markdown("p1", "s3://b/ds/", record, {"masks": 1.25})
    assert md.startswith("# 2 problems: labelhaul sync of `p1`\n\n")
    assert "New version **v000002**, at `s3://b/ds/p1/versions/v000002/manifest.json`." in md
    assert (
        "Mode: full (asked incremental, ran full: v000001 has no watermark); "
        "data rows exported: 12." in md
    )
    assert "Defining filters redefined by this run.\n\n" in md
    assert "**Warning:** the export returned 0 data rows\n\n" in md
    assert "| data_rows | 12 |" in md and "| mask_404 | 2 |" in md
    assert "**Objects by kind:** none" in md and "| masks | 1.25 |" in md


def test_the_summary_of_a_run_that_made_no_version_says_why() -> None:
    record = {
        "mode": "incremental",
        "created": False,
        "reason": "no data row changed since the watermark",
        "current_version_id": "v000004",
        "rows_exported": 0,
    }
    md = summary_markdown("p1", "/data", record, {})
    assert (
        "No new version (no data row changed since the watermark), at "
        "`/data/p1/versions/v000004/manifest.json`." in md
    )
    assert "Mode: incremental; data rows exported: 0." in md and "Warning" not in md


def test_the_errors_artifact_shows_the_first_error_records(tmp_path: Path) -> None:
    assert first_error_rows(tmp_path) == []
    append_errors(
        tmp_path,
        (
            ErrorRecord(stage="mask", kind="mask_404", message=f"m{i}", data_row_id=f"dr{i}")
            for i in range(60)
        ),
    )
    rows = first_error_rows(tmp_path)
    assert len(rows) == 50
    assert rows[0] == {
        "kind": "mask_404",
        "data_row_id": "dr0",
        "label_id": None,
        "feature_id": None,
        "message": "m0",
    }
    assert [r["data_row_id"] for r in first_error_rows(tmp_path, limit=3)] == ["dr0", "dr1", "dr2"]


def test_the_summary_of_a_first_run_that_made_nothing_points_at_no_manifest() -> None:
    record = {
        "mode": "full",
        "created": False,
        "reason": "the export returned 0 data rows: no new version, the dataset has no version yet",
        "current_version_id": None,
        "rows_exported": 0,
    }
    md = summary_markdown("p1", "/data", record, {})
    assert "versions/None" not in md and "manifest.json" not in md
    assert (
        "No new version (the export returned 0 data rows: no new version, the dataset has no "
        "version yet).\n\nMode: full; data rows exported: 0." in md
    )
