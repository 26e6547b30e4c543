"""The run's own account of itself: state name, summary lines, mask progress files."""

from __future__ import annotations

from pathlib import Path

from labelhaul.sync.report import (
    completed_name,
    explain_mode,
    md_counts,
    read_mask_progress,
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
