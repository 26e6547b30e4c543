"""Staging, parts and assembly without Prefect or servers."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from labelhaul import seed
from labelhaul.emulator.synthetic import SyntheticSpec, build_row
from labelhaul.masktypes import MaskResult
from labelhaul.pipeline import (
    assemble_version,
    job_from_dict,
    job_to_dict,
    part_jobs,
    read_data_row_ids,
    read_errors,
    stage_export,
    write_mask_results,
)


def _lines(rows: list[dict[str, object]]) -> list[tuple[int, bytes]]:
    out = []
    offset = 0
    for row in rows:
        line = orjson.dumps(row)
        out.append((offset, line))
        offset += len(line) + 1
    return out


def _synthetic_rows(n: int) -> list[dict[str, object]]:
    spec = SyntheticSpec.make(n_rows=n, instances=3, seed=1, width=64, height=48, number=1)
    return [build_row(spec, i) for i in range(n)]


def test_parts_are_cut_by_composites_and_keep_every_row(tmp_path: Path) -> None:
    rows = _synthetic_rows(25)
    summary = stage_export(_lines(rows), tmp_path, part_composites=4, part_rows=1000)
    assert summary.rows == 25
    jobs = [job for part in summary.parts for job in part_jobs(tmp_path, part)]
    assert all(len(part_jobs(tmp_path, p)) <= 4 for p in summary.parts)
    assert len(jobs) == summary.composites
    assert len(read_data_row_ids(tmp_path)) == 25
    raw = gzip.decompress((tmp_path / "raw-export.ndjson.gz").read_bytes()).splitlines()
    assert [orjson.loads(line) for line in raw] == rows


def test_bad_line_becomes_an_error_record_and_the_rest_lands(tmp_path: Path) -> None:
    good = seed.sample_project_export()
    lines = _lines([good])
    lines.append((10_000, b'{"data_row": {"id": "x"'))
    summary = stage_export(lines, tmp_path)
    assert summary.rows == 1 and summary.bad_lines == 1
    errors = list(read_errors(tmp_path))
    assert errors[0]["offset"] == 10_000


def test_mask_job_round_trips_through_staging() -> None:
    rows = [seed.sample_project_export()]
    from labelhaul.rows import parse_data_row

    job = parse_data_row(rows[0]).mask_jobs[0]
    assert job_from_dict(orjson.loads(orjson.dumps(job_to_dict(job)))) == job


def _land_fake_masks(staging: Path, parts: list[str]) -> None:
    """Stand in for the mask stage: one 1x1 result per instance of every job."""
    for part in parts:
        results = [
            MaskResult(
                data_row_id=j.data_row_id,
                label_id=j.label_id,
                feature_id=i.feature_id,
                sha256="0" * 64,
                x=0,
                y=0,
                w=1,
                h=1,
                area=1,
                height=48,
                width=64,
                rle="01",
                source="composite",
            )
            for j in part_jobs(staging, part)
            for i in j.instances
        ]
        write_mask_results(staging, part, results, [])


def test_assemble_joins_mask_results_and_merges_with_the_parent(tmp_path: Path) -> None:
    rows = _synthetic_rows(6)
    first = stage_export(_lines(rows), tmp_path / "a", part_composites=2)
    _land_fake_masks(tmp_path / "a", first.parts)
    full = assemble_version(tmp_path / "a", first.parts)
    assert full.counts["data_rows"] == 6

    # An incremental run that re-exports rows 0 and 1 only: the rest comes from the parent.
    second = stage_export(_lines(rows[:2]), tmp_path / "b", part_composites=2)
    _land_fake_masks(tmp_path / "b", second.parts)
    merged = assemble_version(
        tmp_path / "b",
        second.parts,
        parent_tables=full.tables,
        replaced_data_row_ids=read_data_row_ids(tmp_path / "b"),
    )
    assert merged.counts == full.counts
    assert merged.content_digest == full.content_digest


@pytest.mark.parametrize(
    ("watermark", "user_start", "expected"),
    [
        ("2024-04-08T16:34:01.000Z", None, datetime(2024, 4, 8, 15, 34, 1, tzinfo=UTC)),
        (None, None, None),
        (
            "2024-04-08T16:34:01.000Z",
            datetime(2024, 5, 1, tzinfo=UTC),
            datetime(2024, 5, 1, tzinfo=UTC),
        ),
    ],
)
def test_incremental_filter_starts_an_overlap_before_the_watermark(
    watermark: str | None, user_start: datetime | None, expected: datetime | None
) -> None:
    from flows.common import incremental_filters
    from labelhaul.export_params import DateRange, ExportFilters

    base = ExportFilters(last_activity_at=DateRange(user_start, None) if user_start else None)
    out = incremental_filters(base, watermark, timedelta(hours=1))
    start = out.last_activity_at.start if out.last_activity_at else None
    assert start == expected


def test_export_errors_stream_lines_become_error_records(tmp_path: Path) -> None:
    from labelhaul.pipeline import stage_export_errors

    lines = [
        (0, b'{"data_row": {"id": "cdr1", "global_key": "a.png"}, "message": "no access"}'),
        (80, b"not json"),
    ]
    assert stage_export_errors(lines, tmp_path) == 2
    records = list(read_errors(tmp_path))
    assert [(r["kind"], r["data_row_id"], r["offset"]) for r in records] == [
        ("export_error", "cdr1", 0),
        ("export_error", None, 80),
    ]
    assert records[0]["message"] == "no access" and records[0]["global_key"] == "a.png"


def test_stage_counts_say_what_a_pre_composite_export_holds(tmp_path: Path) -> None:
    spec = SyntheticSpec.make(
        n_rows=10, instances=3, seed=1, width=64, height=48, number=1, legacy=True
    )
    rows = [build_row(spec, i) for i in range(10)]
    summary = stage_export(_lines(rows), tmp_path)
    with_objects = sum(spec.has_objects(i) for i in range(10))
    assert summary.composites == 0  # none exists: nothing to download and split
    assert summary.instance_only_masks == summary.mask_instances == 3 * with_objects
    assert summary.errors == 0


def test_stage_lands_only_the_exported_source(tmp_path: Path) -> None:
    row = seed.sample_model_run_export()
    exp = next(iter(row["experiments"].values()))
    run_id = next(iter(exp["runs"]))
    exp["runs"]["cotherrun0000000000000000"] = exp["runs"][run_id]
    summary = stage_export(_lines([row]), tmp_path, source_id=run_id)
    assert summary.records_by_table["data_rows"] == 1
    [err] = [e for e in read_errors(tmp_path) if e["kind"] == "other_model_run_entry"]
    assert (
        err["extra"]["path"]
        == f"experiments.{next(iter(row['experiments']))}.runs.cotherrun0000000000000000"
    )


def test_why_not_incremental() -> None:
    from labelhaul.pipeline import why_not_incremental

    assert why_not_incremental(None) is None
    assert why_not_incremental({"watermark": {"value": "2024-01-01T00:00:00Z"}}) is None
    reason = why_not_incremental({"version_id": "v000003", "watermark": {"value": None}})
    assert reason is not None and "v000003" in reason and "running a full sync" in reason
