"""Pure parts of the store: the dataset card, digests, manifest encoding, local store details."""

from __future__ import annotations

from pathlib import Path

import pytest

from labelhaul.manifest import Manifest
from labelhaul.storage import LocalObjectStore, PreconditionFailed
from labelhaul.store import (
    DatasetStore,
    FileEntry,
    digest_entries,
    encode_json,
    render_dataset_card,
)
from tests.helpers import make_manifest

DOC = {
    "schema_version": 1,
    "dataset_id": "ckproject1",
    "version_id": "v000002",
    "parent_version_id": "v000001",
    "created_at": "2026-01-02T03:04:05Z",
    "content_digest": "d" * 64,
    "source": {"kind": "project", "id": "ckproject1"},
    "watermark": {"cursor": "last_activity_at", "value": "2026-01-01T00:00:00Z"},
    "export": {
        "task_ids": ["task-1"],
        "filters": {"workflow_status": "Done"},
        "params": {"label_details": True},
    },
    "counts": {"data_rows": 10, "annotations": 42},
    "changes": {"data_rows_added": 2, "annotations_removed": 1},
    "mode": "incremental",
    "counts_by_kind": {"ImagePolygon": 3, "ImageBoundingBox": 30, "ImageSegmentationMask": 12},
    "counts_by_class": {"zebra": 7, "cat": 20, "dog": 22},
    "errors_by_kind": {"mask_404": 1},
    "masks": {"instances": 12, "errors": 1},
    "files": [
        {
            "role": "table",
            "name": "annotations",
            "key": "tables/annotations-0123456789abcdef.parquet",
            "sha256": "0123456789abcdef" * 4,
            "bytes": 1234,
            "rows": 42,
        }
    ],
}
MANIFEST = Manifest.model_validate(DOC)


def test_card_says_what_a_user_needs() -> None:
    card = render_dataset_card(MANIFEST)
    for needle in [
        "ckproject1",
        "v000002",
        "v000001",
        "task-1",
        "workflow_status",
        "Done",
        "label_details",
        "ImageSegmentationMask",
        "| cat | 20 |",
        "data_rows_added",
        "tables/annotations-0123456789abcdef.parquet",
        "open_dataset",
        "labelhaul pull",
        "last_activity_at",
        "| ImagePolygon | 3 |",
        "| zebra | 7 |",
        "| mask_404 | 1 |",
        "incremental",
        "instances",
    ]:
        assert needle in card, needle


def test_card_is_deterministic_and_handles_a_bare_manifest() -> None:
    reordered = Manifest.model_validate(dict(reversed(DOC.items())))
    assert render_dataset_card(MANIFEST) == render_dataset_card(reordered)
    bare = render_dataset_card(make_manifest(version_id="v000001", files=[]))
    assert "first version" in bare


def test_digest_is_order_independent_and_content_sensitive() -> None:
    a = FileEntry(role="table", name="annotations", key="k1", sha256="a" * 64, bytes=1)
    b = FileEntry(role="coco", name="instances", key="k2", sha256="b" * 64, bytes=1)
    assert digest_entries([a, b]) == digest_entries([b, a])
    assert digest_entries([a, b]) == digest_entries([a.to_dict(), b.to_dict()])
    c = FileEntry(role="coco", name="instances", key="k2", sha256="c" * 64, bytes=1)
    assert digest_entries([a, b]) != digest_entries([a, c])


def test_json_encoding_is_stable_and_strict() -> None:
    assert encode_json({"b": 1, "a": "é"}) == encode_json({"a": "é", "b": 1})
    with pytest.raises(ValueError, match="JSON"):
        encode_json({"a": object()})


def test_bad_suffix_and_sha_are_refused(tmp_path: Path) -> None:
    store = DatasetStore(LocalObjectStore(tmp_path / "s"), "p")
    writer = store.begin()
    src = tmp_path / "f"
    src.write_bytes(b"x")
    with pytest.raises(ValueError, match="suffix"):
        writer.add_file("raw", src, "export", "/../../x")
    with pytest.raises(ValueError):
        store.put_blob("../" + "0" * 61, b"x")
    with pytest.raises(ValueError, match="twice"):
        writer.add_bytes("raw", b"one", "export", ".txt")
        writer.add_bytes("raw", b"two", "export", ".txt")


def test_local_store_leaves_no_temp_files_and_hides_its_own(tmp_path: Path) -> None:
    objects = LocalObjectStore(tmp_path / "s")
    etag = objects.put("a", b"1", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        objects.put("a", b"2", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        objects.put("a", b"2", if_match="0" * 64)
    objects.put("a", b"3", if_match=etag)
    assert list((tmp_path / "s" / ".labelhaul-tmp").rglob("*.part")) == []
    assert list(objects.list()) == ["a"]


def test_corrupt_latest_pointer_names_the_fix(tmp_path: Path) -> None:
    objects = LocalObjectStore(tmp_path / "s")
    objects.put("p/_latest.json", b"{not json")
    with pytest.raises(Exception, match="restore it"):
        DatasetStore(objects, "p").latest()


def test_create_only_without_hard_links(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import os

    def no_link(src: object, dst: object) -> None:
        raise OSError(errno.EPERM, "hard links not supported here")

    monkeypatch.setattr(os, "link", no_link)
    objects = LocalObjectStore(tmp_path / "s")
    objects.put("a/b", b"1", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        objects.put("a/b", b"2", if_none_match=True)
    assert objects.get("a/b") == b"1"


def test_local_list_only_walks_below_the_prefix(tmp_path: Path) -> None:
    objects = LocalObjectStore(tmp_path / "s")
    for key in ["p/versions/v000001/manifest.json", "p/blobs/sha256/ab/x.png", "q/versions/x"]:
        objects.put(key, b"x")
    assert list(objects.list("p/versions/")) == ["p/versions/v000001/manifest.json"]
    assert list(objects.list("p/")) == [
        "p/blobs/sha256/ab/x.png",
        "p/versions/v000001/manifest.json",
    ]
    assert list(objects.list("p/ver")) == ["p/versions/v000001/manifest.json"]
    assert list(objects.list("nothing/here/")) == []


def test_dataset_card_says_how_to_get_a_fresh_signed_url() -> None:
    card = render_dataset_card(MANIFEST)
    assert "## Media URLs" in card
    assert "get_data_row(data_row_id).row_data" in card and "data_row_ids" in card
