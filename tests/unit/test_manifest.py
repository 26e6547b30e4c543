"""The typed manifest: byte-compatible with stored ones, validated on read, one writer."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from labelhaul.errors import StoreError
from labelhaul.manifest import encode_manifest, parse_manifest
from labelhaul.reader import Dataset, pull_version
from labelhaul.storage import LocalObjectStore
from labelhaul.store import DatasetStore, digest_entries, encode_json

STORE_FIELDS = (
    "schema_version",
    "dataset_id",
    "version_id",
    "parent_version_id",
    "created_at",
    "content_digest",
    "files",
)


def _legacy_encode(doc: dict[str, Any]) -> bytes:
    """The manifest writer of the releases before the typed manifest (store.encode_manifest)."""
    return (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def _flow_fields(parent: str | None) -> dict[str, Any]:
    """Manifest fields shaped as `flows/common.py:run_sync` and `pipeline.land_version` pass."""
    return {
        "source": {"kind": "project", "id": "cproj", "name": "Zürich streets"},
        "counts_by_source": {"label": 3},
        "mode": "incremental" if parent else "full",
        "mode_note": None,
        "defining_filters": {},
        "export": {
            "task_ids": ["task-1"],
            "params": {"label_details": True, "data_row_details": True},
            "filters": None,
            "rows_exported": 2,
            "bad_lines": 0,
            "export_errors": 0,
        },
        "counts": {"data_rows": 2, "annotations": 3},
        "counts_by_kind": {"ImageBoundingBox": 3},
        "counts_by_class": {"cat": 3},
        "table_digests": {"data_rows": "a" * 64},
        "watermark": {
            "cursor": "data_row.details.last_activity_at",
            "value": "2026-01-01T00:00:00.000Z",
        },
        "category_map": {"schema-cat": {"id": 7, "name": "cat"}},
        "masks": {"instances": 0, "errors": 0},
        "errors_by_kind": {},
        "run_id": "run-1",
        "flow_run_id": None,
        "changes": {"parent": parent, "counts_delta": {"data_rows": 2}},
        "coco_info": {"description": "labelhaul dataset of project cproj"},
        "coco": {
            "label_policy": "benchmark",
            "data_rows_with_several_labels": 0,
            "annotations_of_other_labels": 0,
            "file_name_collisions": 0,
            "category_ids": "feature_schema_id",
            "skipped": {},
        },
    }


def test_store_writes_the_bytes_the_earlier_writer_wrote_and_reads_them_back(
    tmp_path: Path,
) -> None:
    store = DatasetStore(LocalObjectStore(tmp_path / "s"), "cproj")
    src = tmp_path / "in"
    src.mkdir()
    (src / "t.parquet").write_bytes(b"table one")
    (src / "e.ndjson.gz").write_bytes(b"raw")
    writer = store.begin()
    writer.add_file("table", src / "t.parquet", "data_rows", ".parquet", rows=2)
    writer.add_file("raw", src / "e.ndjson.gz", "export", ".ndjson.gz")
    first = writer.commit(digest_entries(writer.files), _flow_fields(None))
    assert first.version_id == "v000001" and first.manifest is not None

    # A delta on top: a reused segment-0 entry, a segment-1 table, a derived COCO file.
    parent = store.load_manifest("v000001")
    writer = store.begin()
    table = parent.file("table", "data_rows")
    assert table is not None
    writer.reuse_file(table)
    (src / "d.parquet").write_bytes(b"delta")
    (src / "o.parquet").write_bytes(b"ids")
    writer.add_file("table", src / "d.parquet", "data_rows", ".parquet", rows=1, segment=1)
    writer.add_file("overrides", src / "o.parquet", "overrides", ".parquet", rows=1, segment=1)
    fields = _flow_fields("v000001")
    fields["derived_files"] = [
        {"role": "coco", "name": "instances", "sha256": "c" * 64, "bytes": 9, "from": "tables"}
    ]
    second = writer.commit(digest_entries(writer.files), fields)
    assert second.version_id == "v000002"

    for version, given in (("v000001", _flow_fields(None)), ("v000002", fields)):
        raw = (tmp_path / "s" / "cproj" / "versions" / version / "manifest.json").read_bytes()
        stored = json.loads(raw)
        # What the store wrote is what the untyped writer wrote for the same fields.
        legacy = {**given, **{k: stored[k] for k in STORE_FIELDS}}
        assert raw == _legacy_encode(legacy)
        # and it reads back to a manifest that encodes to the very same bytes.
        manifest = store.load_manifest(version)
        assert encode_manifest(manifest) == raw
        assert manifest.to_dict() == stored == store.read_manifest(version)

    raw2 = json.loads((tmp_path / "s" / "cproj" / "versions/v000002/manifest.json").read_bytes())
    assert [sorted(f) for f in raw2["files"]] == [
        ["bytes", "key", "name", "role", "rows", "segment", "sha256"],
        ["bytes", "key", "name", "role", "rows", "sha256"],  # unsegmented: no "segment" key
        ["bytes", "key", "name", "role", "rows", "segment", "sha256"],
        ["bytes", "key", "name", "role", "rows", "sha256"],  # versions/v000002/tables.sql
    ]
    assert raw2["files"][-1]["key"] == "versions/v000002/tables.sql"
    m2 = store.load_manifest("v000002")
    assert m2.watermark is not None and m2.watermark.value == "2026-01-01T00:00:00.000Z"
    assert m2.derived("coco", "instances") is not None
    assert [(f.role, f.segment_index) for f in m2.files] == [
        ("overrides", 1),
        ("table", 0),
        ("table", 1),
        ("sql", 0),
    ]


# What the first release's flow wrote (commit 1e03b42): no names in `source`, no
# `defining_filters`, `coco`, `coco_info`, `derived_files` or segments, and a category map
# of name -> id.
FIRST_RELEASE = {
    "schema_version": 1,
    "dataset_id": "cproj",
    "version_id": "v000001",
    "parent_version_id": None,
    "created_at": "2026-11-25T13:33:11.123456Z",
    "content_digest": "e" * 64,
    "source": {"kind": "project", "id": "cproj"},
    "mode": "full",
    "export": {
        "task_ids": ["t1"],
        "params": {"label_details": True},
        "filters": {},
        "rows_exported": 2,
        "bad_lines": 0,
        "export_errors": 0,
    },
    "counts": {"data_rows": 2, "annotations": 1},
    "counts_by_kind": {"ImageBoundingBox": 1},
    "counts_by_class": {"cat": 1},
    "table_digests": {"annotations": "f" * 64},
    "watermark": {"cursor": "data_row.details.last_activity_at", "value": None},
    "category_map": {"cat": 1},
    "masks": {"instances": 0, "errors": 0},
    "errors_by_kind": {},
    "run_id": "r1",
    "flow_run_id": "fr1",
    "changes": {"parent": None, "counts_delta": {"data_rows": 2, "annotations": 1}},
    "files": [
        {
            "role": "table",
            "name": "annotations",
            "key": "tables/annotations-ffffffffffffffff.parquet",
            "sha256": "f" * 64,
            "bytes": 10,
            "rows": 1,
        },
        {
            "role": "coco",
            "name": "instances",
            "key": "coco/instances-1111111111111111.json",
            "sha256": "1" * 64,
            "bytes": 5,
            "rows": None,
        },
    ],
}


def _store_with(tmp_path: Path, doc: dict[str, Any] | bytes) -> DatasetStore:
    objects = LocalObjectStore(tmp_path / "s")
    raw = doc if isinstance(doc, bytes) else _legacy_encode(doc)
    objects.put("cproj/versions/v000001/manifest.json", raw)
    pointer = {
        "version_id": "v000001",
        "manifest": "versions/v000001/manifest.json",
        "content_digest": "e" * 64,
    }
    objects.put("cproj/_latest.json", encode_json(pointer))
    return DatasetStore(objects, "cproj")


def test_a_first_release_manifest_loads_and_encodes_to_its_bytes(tmp_path: Path) -> None:
    store = _store_with(tmp_path, FIRST_RELEASE)
    manifest = store.load_manifest()
    assert encode_manifest(manifest) == _legacy_encode(FIRST_RELEASE)
    assert manifest.coco is None and manifest.derived_files is None
    assert manifest.defining_filters is None and manifest.source is not None
    assert manifest.source.name is None
    assert manifest.watermark is not None and manifest.watermark.value is None
    assert manifest.category_map == {"cat": 1}
    assert manifest.table_names() == ["annotations"]
    assert [f.segment_index for f in manifest.files] == [0, 0]
    with Dataset(store) as ds:
        assert ds.load_manifest().version_id == "v000001"
        assert ds.manifest() == FIRST_RELEASE


def test_unknown_keys_survive_a_round_trip() -> None:
    doc = copy.deepcopy(FIRST_RELEASE)
    doc["future_field"] = {"nested": [1, 2.5, "é"]}
    doc["export"]["page_size"] = 100  # type: ignore[index]
    doc["files"][0]["checksum_crc32c"] = "abc"  # type: ignore[index]
    raw = _legacy_encode(doc)
    assert encode_manifest(parse_manifest(raw, "m")) == raw


@pytest.mark.parametrize(
    ("drop", "named"),
    [
        (("content_digest",), "content_digest"),
        (("files", 0, "key"), "files.0.key"),
        (("watermark", "cursor"), "watermark.cursor"),
    ],
)
def test_a_manifest_missing_a_required_field_names_version_and_field(
    tmp_path: Path, drop: tuple[Any, ...], named: str
) -> None:
    doc: Any = copy.deepcopy(FIRST_RELEASE)
    holder = doc
    for part in drop[:-1]:
        holder = holder[part]
    del holder[drop[-1]]
    store = _store_with(tmp_path, doc)
    with pytest.raises(StoreError, match=rf"v000001/manifest\.json.*`{named}`: Field required"):
        store.load_manifest()
    # A reader used to fail later, on the missing key (a KeyError), or not at all.
    with Dataset(store) as ds, pytest.raises(StoreError, match=f"`{named}`"):
        ds.table("annotations")


def test_a_mistyped_field_is_refused_not_coerced(tmp_path: Path) -> None:
    doc: Any = copy.deepcopy(FIRST_RELEASE)
    doc["files"][0]["bytes"] = "10"
    with pytest.raises(StoreError, match=r"`files\.0\.bytes`: Input should be a valid integer"):
        _store_with(tmp_path, doc).load_manifest()


def test_a_manifest_of_a_newer_schema_says_upgrade(tmp_path: Path) -> None:
    doc: Any = copy.deepcopy(FIRST_RELEASE)
    doc["schema_version"] = 2
    doc["files"] = {"layout": "something new"}
    with pytest.raises(StoreError, match="schema 2, newer than this labelhaul reads.*upgrade"):
        _store_with(tmp_path, doc).load_manifest()


def test_not_json_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="not a valid manifest"):
        _store_with(tmp_path, b"{truncated").load_manifest()


def test_commit_refuses_fields_that_do_not_fit_the_manifest(tmp_path: Path) -> None:
    store = DatasetStore(LocalObjectStore(tmp_path / "s"), "cproj")
    writer = store.begin()
    writer.add_bytes("raw", b"x", "export", ".txt")
    digest = digest_entries(writer.files)
    with pytest.raises(ValueError, match="`watermark`"):
        writer.commit(digest, {"watermark": "2026-01-01"})
    with pytest.raises(ValueError, match=r"`counts\.data_rows`"):
        writer.commit(digest, {"counts": {"data_rows": "2"}})
    with pytest.raises(ValueError, match="JSON-serialisable"):
        writer.commit(digest, {"export": {"params": object()}})
    assert store.list_versions() == []  # nothing was written


def test_pull_writes_the_stored_manifest_bytes(tmp_path: Path) -> None:
    store = DatasetStore(LocalObjectStore(tmp_path / "s"), "cproj")
    writer = store.begin()
    writer.add_bytes("raw", b"{}", "export", ".ndjson")
    writer.commit(digest_entries(writer.files), {"source": {"kind": "project", "id": "é"}})
    with Dataset(store) as ds:
        pull_version(ds, "latest", tmp_path / "out", masks=False)
    stored = (tmp_path / "s" / "cproj" / "versions" / "v000001" / "manifest.json").read_bytes()
    assert (tmp_path / "out" / "manifest.json").read_bytes() == stored
