"""Tables as a base plus delta segments: merge-on-read and the compaction rule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from labelhaul.segments import (
    iter_merged_batches,
    manifest_segments,
    materialize_table,
    needs_compaction,
    read_overrides,
    table_fingerprint,
    write_overrides,
)
from labelhaul.tables import SCHEMAS, TableSink
from tests.helpers import make_manifest


def _write(path: Path, rows: list[tuple[str | None, str]]) -> Path:
    table = pa.table(
        {
            "data_row_id": pa.array([r[0] for r in rows], type=pa.string()),
            "value": pa.array([r[1] for r in rows], type=pa.string()),
        }
    )
    pq.write_table(table, str(path))
    return path


def _rows(batches: Any) -> list[tuple[str | None, str]]:
    return [(r["data_row_id"], r["value"]) for b in batches for r in b.to_pylist()]


def test_later_segments_replace_earlier_rows_by_data_row_id(tmp_path: Path) -> None:
    base = _write(
        tmp_path / "base.parquet",
        [("a", "a0"), ("b", "b0"), ("b", "b0'"), ("c", "c0"), (None, "orphan"), ("d", "d0")],
    )
    # Delta 1 relabels b (two rows become one) and removes every row of c (no row in the
    # delta, but c is overridden: the export returned it with nothing in this table).
    d1 = _write(tmp_path / "d1.parquet", [("b", "b1")])
    # Delta 2 relabels b again and d; it has no rows for a.
    d2 = _write(tmp_path / "d2.parquet", [("b", "b2"), ("d", "d2")])
    merged = _rows(
        iter_merged_batches(
            [(base, set()), (d1, {"b", "c"}), (None, {"x"}), (d2, {"b", "d"})], batch_size=2
        )
    )
    assert merged == [("a", "a0"), (None, "orphan"), ("b", "b2"), ("d", "d2")]


def test_columns_are_selected_after_filtering_on_the_id(tmp_path: Path) -> None:
    base = _write(tmp_path / "base.parquet", [("a", "a0"), ("b", "b0")])
    d1 = _write(tmp_path / "d1.parquet", [("b", "b1")])
    batches = list(iter_merged_batches([(base, set()), (d1, {"b"})], columns=["value"]))
    assert [b.schema.names for b in batches] == [["value"], ["value"]]
    assert [r["value"] for b in batches for r in b.to_pylist()] == ["a0", "b1"]


def test_overrides_round_trip_sorted_and_reproducible(tmp_path: Path) -> None:
    a = write_overrides({"z", "a", "m"}, tmp_path / "a.parquet")
    b = write_overrides(["m", "z", "a", "a"], tmp_path / "b.parquet")
    assert a.read_bytes() == b.read_bytes()
    assert read_overrides(a) == {"a", "m", "z"}


def _entry(role: str, name: str, sha: str, size: int, segment: int | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "role": role,
        "name": name,
        "key": f"tables/{name}-{sha}.parquet",
        "sha256": sha,
        "bytes": size,
    }
    if segment is not None:
        entry["segment"] = segment
    return entry


def test_manifest_segments_group_files_and_need_overrides_for_deltas() -> None:
    manifest = make_manifest(
        version_id="v000003",
        files=[
            _entry("table", "annotations", "a0", 1000),
            _entry("table", "data_rows", "d0", 500),
            _entry("table", "annotations", "a1", 50, segment=1),
            _entry("overrides", "overrides", "o1", 10, segment=1),
            _entry("coco", "instances", "c0", 99),
        ],
    )
    segs = manifest_segments(manifest)
    assert [s.index for s in segs] == [0, 1]
    assert set(segs[0].tables) == {"annotations", "data_rows"} and segs[0].overrides is None
    assert set(segs[1].tables) == {"annotations"} and segs[1].overrides is not None
    assert table_fingerprint(manifest, "data_rows") == ((0, "d0/"), (1, "/o1"))
    broken = make_manifest(version_id="v9", files=manifest.files[:3])
    with pytest.raises(ValueError, match="no overrides"):
        manifest_segments(broken)


def test_compaction_rule() -> None:
    base = make_manifest(files=[_entry("table", "annotations", "a0", 1000)])
    assert needs_compaction(None, 1)
    assert not needs_compaction(base, 100)
    assert needs_compaction(base, 300)  # deltas over a quarter of the base
    assert needs_compaction(base, 100, compact_fraction=0.05)
    chain = make_manifest(
        files=[
            _entry("table", "annotations", "a0", 1000),
            *[_entry("table", "annotations", f"a{i}", 10, segment=i) for i in range(1, 8)],
            *[_entry("overrides", "overrides", f"o{i}", 5, segment=i) for i in range(1, 8)],
        ]
    )
    assert needs_compaction(chain, 10)  # an 9th segment is one too many
    assert not needs_compaction(chain, 10, max_segments=9)
    assert needs_compaction(chain, 10, max_segments=9, compact_fraction=0.1)  # 105+10 > 100


def test_materialize_conforms_an_older_base_to_the_current_schema(tmp_path: Path) -> None:
    # The base lacks every column but the id (written by an older labelhaul, say).
    base = pa.table({"data_row_id": pa.array(["a", "b"], type=pa.string())})
    pq.write_table(base, str(tmp_path / "base.parquet"))
    sink = TableSink(tmp_path / "delta")
    sink.add("data_rows", [{"data_row_id": "b", "global_key": "gk-b"}])
    delta = sink.close()["data_rows"]
    write_overrides({"b"}, tmp_path / "o1.parquet")
    files = {
        "tables/base": tmp_path / "base.parquet",
        "tables/delta": delta,
        "tables/o1": tmp_path / "o1.parquet",
    }
    manifest = make_manifest(
        version_id="v000002",
        files=[
            {"role": "table", "name": "data_rows", "key": "tables/base", "sha256": "x", "bytes": 1},
            {
                "role": "table",
                "name": "data_rows",
                "key": "tables/delta",
                "sha256": "y",
                "bytes": 1,
                "segment": 1,
            },
            {
                "role": "overrides",
                "name": "overrides",
                "key": "tables/o1",
                "sha256": "z",
                "bytes": 1,
                "segment": 1,
            },
        ],
    )
    out = materialize_table(manifest, "data_rows", lambda e: files[e.key], tmp_path / "m.pq")
    table = pq.read_table(out)
    assert table.schema == SCHEMAS["data_rows"]
    assert table.column("data_row_id").to_pylist() == ["a", "b"]
    assert table.column("global_key").to_pylist() == [None, "gk-b"]
