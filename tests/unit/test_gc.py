"""gc on a local store: which versions go, grace period, age limits, cards, runs, safety.

Versions are built with the store API directly (fast); `tests/integration/test_gc.py` runs
the same rules on both backends and against the real flow.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from labelhaul.errors import StoreError
from labelhaul.gc import collect_garbage, iter_objects
from labelhaul.keys import blob_key
from labelhaul.storage import ObjectStore, open_object_store
from labelhaul.store import DatasetStore, digest_entries
from labelhaul.tables import to_arrow

DATASET = "ckproject1"
FUTURE = datetime.now(UTC) + timedelta(days=3)  # everything written by a test looks old


def blob(text: str) -> tuple[str, bytes]:
    """Return (sha256, bytes) of a fake mask blob."""
    data = f"blob:{text}".encode()
    return hashlib.sha256(data).hexdigest(), data


def make_version(store: DatasetStore, tmp: Path, masks: Sequence[str], *, extra: str = "") -> str:
    """Commit a version whose annotations reference `masks` (blob names); return its id."""
    records: list[dict[str, Any]] = []
    for i, name in enumerate(masks):
        sha, data = blob(name)
        store.put_blob(sha, data)
        records.append({"data_row_id": f"dr{i}", "feature_id": f"f-{name}", "mask_sha256": sha})
    records.append({"data_row_id": "drx", "feature_id": "no-mask", "mask_sha256": None})
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / f"annotations-{'-'.join(masks)}-{extra}.parquet"
    pq.write_table(to_arrow("annotations", records), path)
    writer = store.begin()
    writer.add_file("table", path, "annotations", ".parquet", name="annotations")
    writer.add_bytes("coco", f'{{"masks": {list(masks)!r}}}'.encode(), "instances", ".json")
    writer.add_bytes("raw", b"shared raw export", "export", ".ndjson.gz")  # same in every version
    if extra:
        writer.add_bytes("raw", extra.encode(), "errors", ".ndjson.gz", name="export_errors")
    result = writer.commit(digest_entries(writer.files))
    assert result.version_id is not None
    return result.version_id


def all_keys(objects: ObjectStore) -> list[str]:
    return [k for k in objects.list("") if not k.startswith("_doctor/")]


def assert_version_complete(store: DatasetStore, version_id: str, tmp: Path) -> None:
    """Every file of the version is there with its sha256, and every blob it names."""
    manifest = store.read_manifest(version_id)
    for entry in manifest["files"]:
        data = store.objects.get(store.key(entry["key"]))
        assert data is not None, (version_id, entry["key"])
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        if entry["name"] == "annotations":
            local = tmp / f"check-{entry['sha256']}.parquet"
            local.write_bytes(data)
            for sha in pq.read_table(local, columns=["mask_sha256"]).column(0).to_pylist():
                if sha:
                    assert hashlib.sha256(store.read_blob(sha)).hexdigest() == sha


@pytest.fixture
def store(tmp_path: Path) -> DatasetStore:
    return DatasetStore(open_object_store(str(tmp_path / "store")), DATASET)


def test_keep_n_deletes_older_versions_and_only_their_own_data(
    store: DatasetStore, tmp_path: Path
) -> None:
    for i, masks in enumerate([["a", "b"], ["b", "c"], ["c", "d"], ["d", "e"]]):
        make_version(store, tmp_path / "src", masks, extra=str(i))
    deleted: list[tuple[str, str]] = []
    report = collect_garbage(
        store, keep=2, now=FUTURE, on_delete=lambda kind, key, size: deleted.append((kind, key))
    )
    assert store.list_versions() == ["v000003", "v000004"]
    assert report.deleted_versions == ["v000001", "v000002"]
    assert report.kept_versions == ["v000003", "v000004"]
    present = set(store.objects.list(store.key("blobs")))
    want = {store.key(blob_key(blob(n)[0])) for n in "cde"}
    assert present == want  # a and b went, c is still used by v000003
    assert report.deleted_blobs == 2
    for version_id in ("v000003", "v000004"):
        assert_version_complete(store, version_id, tmp_path)
    # The manifest of a version goes before its card, and versions before any data.
    kinds = [kind for kind, _ in deleted]
    assert kinds[:4] == ["version", "card", "version", "card"]
    assert deleted[0] == ("version", "versions/v000001/manifest.json")
    # Nothing of a deleted version stays under versions/ (its card and tables.sql go too).
    left = {
        k.split("/versions/")[1].split("/")[0] for k in store.objects.list(store.key("versions"))
    }
    assert left == {"v000003", "v000004"}
    assert store.objects.exists(store.key("versions/v000003/tables.sql"))
    # The raw export shared by every version survives; v1's and v2's errors files do not.
    raw = sorted(k.rsplit("/", 1)[-1] for k in store.objects.list(store.key("raw")))
    assert len([r for r in raw if r.startswith("export-")]) == 1
    assert len([r for r in raw if r.startswith("errors-")]) == 2


def test_latest_and_newer_versions_are_never_deleted(store: DatasetStore, tmp_path: Path) -> None:
    for masks in (["a"], ["b"], ["c"]):
        make_version(store, tmp_path / "src", masks)
    pointer_v3 = store.objects.get(store.key("_latest.json"))
    assert pointer_v3 is not None and b"v000003" in pointer_v3
    make_version(store, tmp_path / "src", ["d"])
    # As if v4's sync had committed its manifest but not yet moved the pointer.
    store.objects.put(store.key("_latest.json"), pointer_v3)
    report = collect_garbage(store, keep=1, older_than_days=0, now=FUTURE)
    assert report.latest == "v000003"
    assert store.list_versions() == ["v000003", "v000004"]
    assert_version_complete(store, "v000003", tmp_path)
    assert_version_complete(store, "v000004", tmp_path)
    assert not store.objects.exists(store.key(blob_key(blob("a")[0])))


def test_grace_period_keeps_young_unreferenced_objects(store: DatasetStore, tmp_path: Path) -> None:
    make_version(store, tmp_path / "src", ["a"])
    make_version(store, tmp_path / "src", ["b"])
    # A sync in progress: a blob and a table written, no manifest yet.
    young_sha, young = blob("in-flight")
    store.put_blob(young_sha, young)
    store.objects.put(store.key("tables/annotations-0123456789abcdef.parquet"), b"staged")
    _age(
        store,
        older_than_hours=48,
        except_keys=frozenset({blob_key(young_sha), "tables/annotations-0123456789abcdef.parquet"}),
    )
    report = collect_garbage(store, keep=1, grace_hours=24)
    assert store.objects.exists(store.key(blob_key(young_sha)))
    assert store.objects.exists(store.key("tables/annotations-0123456789abcdef.parquet"))
    assert not store.objects.exists(store.key(blob_key(blob("a")[0])))
    assert report.kept_young == 2
    # Once the grace period is over they are unreferenced garbage like any other.
    report = collect_garbage(store, keep=1, grace_hours=0, force=True)
    assert not store.objects.exists(store.key(blob_key(young_sha)))
    assert report.deleted_blobs == 1 and report.deleted_files == 1


def _age(
    store: DatasetStore, *, older_than_hours: float, except_keys: frozenset[str] = frozenset()
) -> None:
    """Set the mtime of every object of the dataset back (local store only)."""
    old = time.time() - older_than_hours * 3600
    root = Path(store.objects.uri_for(store.key("x"))).parent
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and rel not in except_keys:
            os.utime(path, (old, old))


def test_older_than_keeps_young_versions_beyond_n(tmp_path: Path) -> None:
    now = datetime(2026, 1, 31, tzinfo=UTC)
    days: list[int] = []

    def clock() -> datetime:
        return now - timedelta(days=days[-1])

    store = DatasetStore(open_object_store(str(tmp_path / "store")), DATASET, clock=clock)
    for age, masks in zip([30, 20, 5, 1], [["a"], ["b"], ["c"], ["d"]], strict=True):
        days.append(age)
        make_version(store, tmp_path / "src", masks)
    report = collect_garbage(store, keep=1, older_than_days=10, now=now + timedelta(days=2))
    # v1 (32 days old) and v2 (22) go; v3 (7 days) is beyond N but too young.
    assert report.deleted_versions == ["v000001", "v000002"]
    assert store.list_versions() == ["v000003", "v000004"]


def test_dry_run_deletes_nothing_and_reports_what_a_real_run_deletes(
    store: DatasetStore, tmp_path: Path
) -> None:
    for masks in (["a", "b"], ["c"], ["d"]):
        make_version(store, tmp_path / "src", masks)
    before = all_keys(store.objects)
    would: list[str] = []
    dry = collect_garbage(
        store, keep=1, now=FUTURE, dry_run=True, on_delete=lambda k, key, s: would.append(key)
    )
    assert all_keys(store.objects) == before
    did: list[str] = []
    real = collect_garbage(store, keep=1, now=FUTURE, on_delete=lambda k, key, s: did.append(key))
    assert would == did and would
    assert dry.deleted_blobs == real.deleted_blobs == 3
    assert dry.deleted_versions == real.deleted_versions == ["v000001", "v000002"]
    assert dry.dry_run and not real.dry_run


def test_orphan_cards_and_old_run_records(store: DatasetStore, tmp_path: Path) -> None:
    make_version(store, tmp_path / "src", ["a"])
    store.objects.put(store.key("versions/v000007/README.md"), b"# a crashed commit attempt")
    store.write_run_record("old-run", {"status": "completed"})
    _age(store, older_than_hours=24 * 40)
    store.write_run_record("new-run", {"status": "running"})
    report = collect_garbage(store, keep=1, older_than_days=30)
    assert not store.objects.exists(store.key("versions/v000007/README.md"))
    assert store.objects.exists(store.key("versions/v000001/README.md"))
    assert report.deleted_cards == 1
    assert report.deleted_runs == 1
    assert store.read_run_record("old-run") is None
    assert store.read_run_record("new-run") is not None
    # Without --older-than run records stay.
    store.write_run_record("old-run", {"status": "completed"})
    _age(store, older_than_hours=24 * 40)
    assert collect_garbage(store, keep=1).deleted_runs == 0


def test_a_retained_version_with_a_missing_table_stops_gc_before_any_deletion(
    store: DatasetStore, tmp_path: Path
) -> None:
    make_version(store, tmp_path / "src", ["a"])
    make_version(store, tmp_path / "src", ["b"])
    table = next(
        f["key"] for f in store.read_manifest("v000002")["files"] if f["name"] == "annotations"
    )
    store.objects.delete(store.key(table))
    before = all_keys(store.objects)
    with pytest.raises(StoreError, match="v000002.*missing"):
        collect_garbage(store, keep=1, now=FUTURE)
    assert all_keys(store.objects) == before


def test_empty_dataset_and_bad_arguments(store: DatasetStore) -> None:
    report = collect_garbage(store, keep=1, now=FUTURE)
    assert report.latest is None and report.deleted_versions == []
    with pytest.raises(ValueError, match="keep"):
        collect_garbage(store, keep=0)
    with pytest.raises(ValueError, match="negative"):
        collect_garbage(store, keep=1, grace_hours=-1)


@pytest.mark.parametrize("dataset", [DATASET, None])
def test_listing_is_relative_to_the_dataset_root(tmp_path: Path, dataset: str | None) -> None:
    objects = open_object_store(str(tmp_path / "store"))
    store = DatasetStore(objects, dataset)
    store.objects.put(store.key("tables/t-1.parquet"), b"12345")
    store.objects.put(store.key("tables/sub/t-2.parquet"), b"1")
    listed = sorted(iter_objects(store, "tables"), key=lambda o: o.key)
    assert [(o.key, o.size) for o in listed] == [
        ("tables/sub/t-2.parquet", 1),
        ("tables/t-1.parquet", 5),
    ]
    assert all(abs((o.last_modified - datetime.now(UTC)).total_seconds()) < 60 for o in listed)


def test_a_pointer_to_a_missing_manifest_stops_gc(store: DatasetStore, tmp_path: Path) -> None:
    make_version(store, tmp_path / "src", ["a"])
    make_version(store, tmp_path / "src", ["b"])
    store.objects.delete(store.key("versions/v000002/manifest.json"))
    before = all_keys(store.objects)
    with pytest.raises(StoreError, match="v000002, which has no manifest"):
        collect_garbage(store, keep=1, now=FUTURE)
    assert all_keys(store.objects) == before


def test_versions_sharing_an_annotations_table_keep_its_blobs(
    store: DatasetStore, tmp_path: Path
) -> None:
    make_version(store, tmp_path / "src", ["a", "b"], extra="1")
    make_version(store, tmp_path / "src", ["a", "b"], extra="2")  # same table, new errors file
    make_version(store, tmp_path / "src", ["c"], extra="3")

    def table_key(version_id: str) -> str:
        files = store.read_manifest(version_id)["files"]
        return next(str(f["key"]) for f in files if f["name"] == "annotations")

    assert table_key("v000001") == table_key("v000002")
    report = collect_garbage(store, keep=2, now=FUTURE)
    assert report.deleted_versions == ["v000001"]
    assert report.referenced_blobs == 3
    for version_id in ("v000002", "v000003"):
        assert_version_complete(store, version_id, tmp_path)


def test_a_grace_period_shorter_than_a_sync_is_refused_unless_forced(tmp_path: Path) -> None:
    """Issue 13 item 3: gc must not take the blobs of a sync in flight."""
    from labelhaul.errors import ConfigError
    from labelhaul.gc import GC_MARKER, MIN_GRACE_HOURS

    store = DatasetStore(open_object_store(str(tmp_path / "s")), "p")
    with pytest.raises(ConfigError, match="--force"):
        collect_garbage(store, keep=1, grace_hours=MIN_GRACE_HOURS - 1)
    assert not store.objects.exists(store.key(GC_MARKER))
    collect_garbage(store, keep=1, grace_hours=1, dry_run=True)  # deletes nothing: allowed
    collect_garbage(store, keep=1, grace_hours=1, force=True)
    assert store.objects.exists(store.key(GC_MARKER))  # a sync in flight will notice


def test_span_files_of_deleted_versions_go_and_kept_ones_stay(
    store: DatasetStore, tmp_path: Path
) -> None:
    # spans/ is a data directory like coco/: without it in gc's sweep, every old version's
    # span JSONL would stay in the store forever.
    kept: list[str] = []
    for i in range(3):
        make_version(store, tmp_path / "src", ["a"], extra=str(i))
        writer = store.begin()
        for entry in store.load_manifest(store.list_versions()[-1]).files:
            writer.reuse_file(entry)
        entry = writer.add_bytes("spans", f'{{"text": "{i}"}}\n'.encode(), "ner", ".jsonl")
        kept.append(entry.key)
        assert writer.commit(digest_entries(writer.files)).version_id is not None
    collect_garbage(store, keep=1, now=FUTURE)
    spans = sorted(store.objects.list(store.key("spans")))
    assert spans == [store.key(kept[-1])]
    assert_version_complete(store, store.list_versions()[-1], tmp_path)
