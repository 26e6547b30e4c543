"""Parquet tables: round trips, fixed schemas, reproducible bytes, digests, merges, watermark."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest

from labelhaul import seed
from labelhaul.masktypes import MaskResult
from labelhaul.rows import ParsedRow, parse_export_line
from labelhaul.tables import (
    SCHEMAS,
    TableSink,
    Watermark,
    apply_mask_results,
    compute_watermark,
    copy_rows_except,
    dataset_digest,
    digest_parquet,
    digest_records,
    iter_parquet_records,
    to_arrow,
)


def _rows(n: int) -> list[ParsedRow]:
    out = []
    for i in range(n):
        export = seed.sample_project_export() if i % 2 == 0 else seed.sample_model_run_export()
        export["data_row"]["id"] = f"dr{i:03d}"
        export["data_row"]["global_key"] = f"image-{i:03d}.jpg"
        row = parse_export_line(orjson.dumps(export), i * 1000)
        assert isinstance(row, ParsedRow)
        out.append(row)
    return out


def _add(sink: TableSink, row: ParsedRow) -> None:
    """Add one parsed row's records, table by table (as `pipeline.assemble_version` does)."""
    for table, records in row.tables.items():
        sink.add(table, records)


def _write(directory: Path, rows: list[ParsedRow], row_group_size: int) -> dict[str, Path]:
    with TableSink(directory, row_group_size=row_group_size) as sink:
        for row in rows:
            _add(sink, row)
    return sink.close()


def _records(rows: list[ParsedRow], table: str) -> list[dict[str, Any]]:
    return [r for row in rows for r in row.tables[table]]


def test_written_tables_read_back_equal(tmp_path: Path) -> None:
    rows = _rows(6)
    paths = _write(tmp_path, rows, row_group_size=5)
    assert set(paths) == set(SCHEMAS)
    for table, path in paths.items():
        got = pq.read_table(path)
        assert got.schema.equals(SCHEMAS[table]), table
        expected = to_arrow(table, _records(rows, table)).to_pylist()
        assert got.to_pylist() == expected, table
        assert list(iter_parquet_records(path, batch_size=4)) == expected
    anns = pq.read_table(paths["annotations"]).to_pylist()
    assert any(a["points"] and a["points"][0] == {"x": 1489.581, "y": 183.934} for a in anns)


def test_row_groups_are_bounded_and_bytes_reproducible(tmp_path: Path) -> None:
    rows = _rows(6)
    a = _write(tmp_path / "a", rows, row_group_size=4)
    # Same records, added in other chunkings: one big add per table.
    with TableSink(tmp_path / "b", row_group_size=4) as sink:
        for table in SCHEMAS:
            sink.add(table, _records(rows, table))
    b = sink.close()
    for table in SCHEMAS:
        assert a[table].read_bytes() == b[table].read_bytes(), table
    meta = pq.ParquetFile(a["annotations"]).metadata
    assert meta.num_rows == len(_records(rows, "annotations")) > 8
    sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    assert max(sizes) <= 4 and sizes[:-1] == [4] * (len(sizes) - 1)


def test_empty_tables_keep_their_schema(tmp_path: Path) -> None:
    paths = TableSink(tmp_path).close()
    for table, path in paths.items():
        got = pq.read_table(path)
        assert got.num_rows == 0
        assert got.schema.equals(SCHEMAS[table])
    assert "mask_rle" in SCHEMAS["annotations"].names


def test_unknown_table_is_refused(tmp_path: Path) -> None:
    sink = TableSink(tmp_path)
    with pytest.raises(KeyError, match="unknown table"):
        sink.add("nope", [{}])


def test_digest_is_independent_of_row_order(tmp_path: Path) -> None:
    rows = _rows(5)
    shuffled = list(rows)
    random.Random(4).shuffle(shuffled)
    a = _write(tmp_path / "a", rows, row_group_size=3)
    b = _write(tmp_path / "b", shuffled, row_group_size=7)
    digests_a = {t: digest_parquet(p) for t, p in a.items()}
    digests_b = {t: digest_parquet(p) for t, p in b.items()}
    assert digests_a == digests_b
    assert a["annotations"].read_bytes() != b["annotations"].read_bytes()
    for table in SCHEMAS:
        assert digest_records(table, _records(shuffled, table)) == digests_a[table]
    # A changed value changes the digest; the dataset digest follows.
    recs = _records(rows, "annotations")
    recs[3] = {**recs[3], "name": "renamed"}
    changed = digest_records("annotations", recs)
    assert changed != digests_a["annotations"]
    assert dataset_digest(digests_a) == dataset_digest(dict(reversed(digests_a.items())))
    assert dataset_digest(digests_a) != dataset_digest({**digests_a, "annotations": changed})
    # Excluded columns (e.g. signed URLs that change per export) do not count.
    moved = [{**r, "composite_url": "https://other/" + str(i)} for i, r in enumerate(recs)]
    volatile = ("composite_url", "name")
    assert digest_records("annotations", moved, exclude=volatile) == digest_parquet(
        a["annotations"], exclude=volatile
    )
    assert digest_parquet(a["annotations"], exclude=volatile) != digests_a["annotations"]
    # Empty tables have a digest too, and it is not any non-empty table's.
    assert digests_a["attachments"] == "0" * 64


def test_copy_rows_except_streams_the_parent_minus_replaced(tmp_path: Path) -> None:
    rows = _rows(6)
    parent = _write(tmp_path / "parent", rows, row_group_size=4)
    replaced = {"dr001", "dr004"}
    with TableSink(tmp_path / "child", row_group_size=4) as sink:
        copied = copy_rows_except(
            parent["annotations"], "annotations", replaced, sink, batch_size=5
        )
        # The replaced rows come back re-exported (here: unchanged) after the copy.
        for row in rows:
            if row.data_row_id in replaced:
                _add(sink, row)
    child = sink.close()
    kept = [r for r in _records(rows, "annotations") if r["data_row_id"] not in replaced]
    assert copied == len(kept)
    assert digest_parquet(child["annotations"]) == digest_parquet(parent["annotations"])
    got = pq.read_table(child["annotations"]).to_pylist()
    assert got[: len(kept)] == to_arrow("annotations", kept).to_pylist()


def test_copy_rows_except_with_nothing_replaced_copies_everything(tmp_path: Path) -> None:
    rows = _rows(3)
    parent = _write(tmp_path / "parent", rows, row_group_size=2)
    with TableSink(tmp_path / "child") as sink:
        for table, path in parent.items():
            copy_rows_except(path, table, set(), sink)
    child = sink.close()
    for table in SCHEMAS:
        assert digest_parquet(child[table]) == digest_parquet(parent[table]), table


def test_apply_mask_results_fills_mask_columns_by_feature_id(tmp_path: Path) -> None:
    (row,) = _rows(1)
    masks = [
        r for r in row.tables["annotations"] if r["annotation_kind"] == "ImageSegmentationMask"
    ]
    res = MaskResult(
        data_row_id=row.data_row_id,
        label_id=masks[0]["label_id"],
        feature_id=masks[0]["feature_id"],
        sha256="ab" * 32,
        x=3,
        y=4,
        w=5,
        h=6,
        area=20,
        height=1707,
        width=2560,
        rle="abc",
        source="composite",
    )
    out = apply_mask_results(row.tables["annotations"], [res])
    assert len(out) == len(row.tables["annotations"])
    (filled,) = [r for r in out if r["mask_sha256"]]
    assert filled["feature_id"] == res.feature_id
    assert (filled["mask_x"], filled["mask_y"], filled["mask_w"], filled["mask_h"]) == (3, 4, 5, 6)
    assert (filled["mask_area"], filled["mask_rle"], filled["mask_source"]) == (
        20,
        "abc",
        "composite",
    )
    assert all(r["mask_sha256"] is None for r in out if r is not filled)
    with TableSink(tmp_path) as sink:
        sink.add("annotations", out)
    got = pq.read_table(sink.close()["annotations"]).to_pylist()
    assert [r["mask_rle"] for r in got if r["mask_rle"]] == ["abc"]


def test_watermark_is_the_latest_instant_and_never_moves_back() -> None:
    mark = compute_watermark(
        [
            "2024-04-08T16:34:01.000+00:00",
            None,
            "2024-04-08T18:00:00.000+02:00",  # 16:00 UTC: earlier despite the larger text
            "2024-04-08T16:34:01.500Z",
            "not a date",
        ]
    )
    assert mark.cursor == "data_row.details.last_activity_at"
    assert mark.value == "2024-04-08T16:34:01.500Z"
    assert mark.ignored == ("not a date",)
    assert compute_watermark([], parent=mark) == mark
    assert compute_watermark(["2020-01-01T00:00:00Z"], parent=mark).value == mark.value
    assert compute_watermark(["2030-01-01T00:00:00"], parent=mark.value).value == (
        "2030-01-01T00:00:00.000Z"
    )
    assert compute_watermark([None]) == Watermark(value=None)
    assert mark.to_dict() == {"cursor": mark.cursor, "value": mark.value}


def _peak_while_writing(directory: Path, n: int, group: int = 100) -> int:
    import tracemalloc

    def records() -> Any:
        for i in range(n):
            yield {
                "data_row_id": f"dr{i}",
                "feature_id": f"f{i}",
                "annotation_kind": "ImagePolygon",
                "points": [{"x": float(i), "y": float(j)} for j in range(3)],
            }

    tracemalloc.start()
    try:
        with TableSink(directory, row_group_size=group) as sink:
            sink.add("annotations", records())
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_sink_memory_is_bounded_by_the_row_group_not_the_table(tmp_path: Path) -> None:
    # One-time allocations (lazy imports, codec set-up) outside the measurement.
    with TableSink(tmp_path / "warm") as warm:
        warm.add("annotations", [{"data_row_id": "x", "points": [{"x": 1.0, "y": 2.0}]}])
    small = _peak_while_writing(tmp_path / "small", 400)
    large = _peak_while_writing(tmp_path / "large", 1_600)
    assert pq.ParquetFile(tmp_path / "large" / "annotations.parquet").metadata.num_rows == 1_600
    # Four times the rows, about the same peak: only one row group is ever buffered.
    assert large < small * 1.5


def test_a_mask_without_a_result_is_invalid_with_its_error_kind() -> None:
    """Issue 13 item 8: failed masks never look valid."""
    from labelhaul.tables import apply_mask_results

    base = {"annotation_kind": "ImageSegmentationMask", "valid": True, "error_kind": None}
    records = [
        {**base, "feature_id": "gone"},
        {**base, "feature_id": "empty"},
        {**base, "feature_id": "nobody-said"},
        {"annotation_kind": "ImageBoundingBox", "feature_id": "box", "valid": True},
    ]
    out = apply_mask_results(records, [], {"gone": "mask_unavailable", "empty": "mask_empty"})
    assert [(r["valid"], r.get("error_kind")) for r in out] == [
        (False, "mask_unavailable"),
        (False, "mask_empty"),
        (False, "mask_unavailable"),
        (True, None),
    ]
