"""Staging, parts and assembly without Prefect or servers."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from bench.bench_assemble import land_stand_in_masks
from labelhaul import seed
from labelhaul.emulator.synthetic import SyntheticSpec, build_row
from labelhaul.pipeline import (
    assemble_version,
    job_from_dict,
    job_to_dict,
    part_jobs,
    read_data_row_ids,
    read_errors,
    stage_export,
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
    land_stand_in_masks(staging, parts, width=64, height=48)


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
    from tests.helpers import make_manifest

    cursor = "data_row.details.last_activity_at"
    assert why_not_incremental(None) is None
    marked = make_manifest(watermark={"cursor": cursor, "value": "2024-01-01T00:00:00Z"})
    assert why_not_incremental(marked) is None
    unmarked = make_manifest(version_id="v000003", watermark={"cursor": cursor, "value": None})
    reason = why_not_incremental(unmarked)
    assert reason is not None and "v000003" in reason and "running a full sync" in reason


def test_a_data_row_exported_twice_lands_once_the_later_copy_winning(tmp_path: Path) -> None:
    """Issue 13 item 6: duplicates (retried or split exports) are landed once, with a record."""
    rows = _synthetic_rows(4)
    later = orjson.loads(orjson.dumps(rows[1]))
    later["data_row"]["global_key"] = "second-copy.png"
    summary = stage_export(_lines([*rows, later]), tmp_path, part_composites=2)
    assert summary.rows == 5 and summary.duplicates == 1
    assert summary.composites == 4  # the first copy's composite is not split
    jobs = [j for part in summary.parts for j in part_jobs(tmp_path, part)]
    assert len(jobs) == 4 and [j.global_key for j in jobs].count("second-copy.png") == 1
    drid = str(rows[1]["data_row"]["id"])  # type: ignore[index]
    (dup,) = [e for e in read_errors(tmp_path) if e["kind"] == "duplicate_data_row"]
    assert dup["data_row_id"] == drid and dup["severity"] == "warning"
    assert dup["extra"]["earlier_offset"] < dup["offset"]
    _land_fake_masks(tmp_path, summary.parts)
    version = assemble_version(tmp_path, summary.parts)
    assert version.counts["data_rows"] == 4
    from labelhaul.tables import iter_parquet_records

    keys = [r["global_key"] for r in iter_parquet_records(version.tables["data_rows"])]
    assert sorted(keys, key=str).count("second-copy.png") == 1 and len(keys) == 4
    ann = list(iter_parquet_records(version.tables["annotations"]))
    assert len({a["feature_id"] for a in ann}) == len(ann)  # nothing doubled


def _stamped(row: dict[str, object], stamp: str) -> dict[str, object]:
    out = orjson.loads(orjson.dumps(row))
    out["data_row"]["details"]["last_activity_at"] = stamp
    return dict(out)


def test_watermark_never_passes_the_export_start(tmp_path: Path) -> None:
    """Issue 13 item 4: a row stamped 2099 is a warning and does not move the watermark."""
    rows = _synthetic_rows(3)
    started = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
    lines = _lines(
        [
            _stamped(rows[0], "2024-05-01T00:00:00.000Z"),
            _stamped(rows[1], "2099-01-01T00:00:00.000Z"),
            _stamped(rows[2], "2024-06-01T12:00:30.000Z"),  # clock skew: clamped
        ]
    )
    summary = stage_export(lines, tmp_path, not_after=started)
    assert summary.max_last_activity_at == "2024-06-01T12:00:00.000Z"
    (bad,) = [e for e in read_errors(tmp_path) if e["kind"] == "timestamp_out_of_range"]
    assert bad["data_row_id"] == rows[1]["data_row"]["id"]  # type: ignore[index]
    assert "2099" in bad["message"] and bad["severity"] == "warning"


def test_mask_failures_are_counted_transient_or_permanent(tmp_path: Path) -> None:
    """Issue 13 item 1: a transient mask failure refuses the commit; permanent ones by setting."""
    from labelhaul.errors import IncompleteRunError
    from labelhaul.pipeline import append_errors, check_mask_failures
    from labelhaul.records import ErrorRecord

    append_errors(
        tmp_path,
        [
            ErrorRecord("mask", "mask_composite_unavailable", "w", severity="warning"),
            ErrorRecord("mask", "mask_unavailable", "x", feature_id="a", extra={"status": 404}),
            ErrorRecord("mask", "mask_empty", "e", feature_id="b", severity="warning"),
        ],
    )
    found = check_mask_failures(tmp_path, 10, max_permanent_fraction=1.0, latest="v000003")
    assert (found.transient, found.permanent) == (0, 2)
    with pytest.raises(IncompleteRunError, match="2 of 3 masks failed for good"):
        check_mask_failures(tmp_path, 3, max_permanent_fraction=0.5, latest="v000003")
    append_errors(
        tmp_path,
        [
            ErrorRecord("mask", "mask_unavailable", "y", feature_id="c", extra={"transient": True}),
            ErrorRecord(
                "mask",
                "mask_unavailable",
                "z",
                feature_id="d",
                extra={"status": 503, "transient": True},
            ),
        ],
    )
    with pytest.raises(IncompleteRunError) as info:
        check_mask_failures(tmp_path, 10, max_permanent_fraction=1.0, latest="v000003")
    text = str(info.value)
    assert "2 of 10 masks could not be downloaded for transient reasons" in text
    assert "HTTP 503: 1" in text and "latest stays v000003" in text


def test_staging_reports_each_new_part_holding_mask_jobs(tmp_path: Path) -> None:
    rows = _synthetic_rows(10)
    seen: list[int] = []
    summary = stage_export(_lines(rows), tmp_path, part_composites=3, on_mask_parts=seen.append)
    with_jobs = [p for p in summary.parts if part_jobs(tmp_path, p)]
    assert seen == list(range(1, len(with_jobs) + 1)) and len(with_jobs) == 4


def _digest_in_worker_process(fn: object, *args: object) -> object:
    """What a worker runs for `offload`: the function, and the process it ran in."""
    import os

    return fn(*args), os.getpid()  # type: ignore[operator]


def test_assembling_in_the_mask_pool_lands_the_same_bytes(tmp_path: Path) -> None:
    """Issue 17: assembling hands the parts' tables and the digests to the idle mask workers."""
    import os
    from concurrent.futures import BrokenExecutor, Future

    from labelhaul.maskpool import MaskPool

    rows = _synthetic_rows(12)
    versions = {}
    pool = MaskPool(2)
    pids: list[int] = []
    offloaded: list[str] = []

    def offload(fn: object, *args: object) -> Future[object]:
        offloaded.append(fn.__name__)  # type: ignore[attr-defined]
        outer = pool.submit(_digest_in_worker_process, fn, *args)
        done: Future[object] = Future()

        def unwrap(f: Future[object]) -> None:
            value, pid = f.result()  # type: ignore[misc]
            pids.append(pid)
            done.set_result(value)

        outer.add_done_callback(unwrap)
        return done

    def broken(fn: object, *args: object) -> Future[object]:
        dead: Future[object] = Future()
        dead.set_exception(BrokenExecutor("a worker died"))
        return dead

    try:
        for name, how in (("here", None), ("pool", offload), ("broken", broken)):
            staging = tmp_path / name
            summary = stage_export(_lines(rows), staging, part_composites=2)
            _land_fake_masks(staging, summary.parts)
            versions[name] = assemble_version(staging, summary.parts, offload=how)
    finally:
        pool.close()
    here, in_pool, after_broken = versions["here"], versions["pool"], versions["broken"]
    assert sorted(set(offloaded)) == ["build_part_tables", "digest_table"]
    assert offloaded.count("build_part_tables") == 6  # every part, in its worker
    for got in (in_pool, after_broken):
        assert list(got.tables) == list(here.tables)
        for name, path in here.tables.items():
            assert got.tables[name].read_bytes() == path.read_bytes(), name
        assert got.coco.read_bytes() == here.coco.read_bytes()
    assert in_pool.table_digests == here.table_digests
    assert in_pool.content_digest == here.content_digest
    assert in_pool.digested_elsewhere == len(here.tables) and here.digested_elsewhere == 0
    assert pids and os.getpid() not in pids
    # A few parts are built here: a worker's first part would wait on its imports.
    few = tmp_path / "few"
    summary = stage_export(_lines(rows[:4]), few, part_composites=2)
    _land_fake_masks(few, summary.parts)
    offloaded.clear()
    pool = MaskPool(1)
    try:
        assemble_version(few, summary.parts, offload=offload)
    finally:
        pool.close()
    assert len(summary.parts) == 2 and "build_part_tables" not in offloaded
    assert "digest_table" in offloaded
    # A worker that died loses no digest: the table is digested here instead.
    assert after_broken.content_digest == here.content_digest
    assert after_broken.digested_elsewhere == 0
