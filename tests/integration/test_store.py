"""The store protocol on both backends (local directory and moto's S3 server)."""

from __future__ import annotations

import gzip
import hashlib
import json
import multiprocessing
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from labelhaul.errors import NotFoundError
from labelhaul.storage import ObjectStore, PreconditionFailed, open_object_store
from labelhaul.store import DatasetStore, digest_entries, file_sha256

FIXED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def fixed_clock() -> datetime:
    return FIXED


def write_inputs(directory: Path, tag: str, n_rows: int = 3) -> dict[str, Path]:
    """Write one small table, a COCO file and a raw export, distinct per `tag`."""
    directory.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            "data_row_id": [f"dr-{tag}-{i}" for i in range(n_rows)],
            "feature_id": [f"f-{tag}-{i}" for i in range(n_rows)],
        }
    )
    pq.write_table(table, directory / "annotations.parquet")
    (directory / "instances.json").write_text(json.dumps({"images": [], "tag": tag}))
    raw = gzip.compress(json.dumps({"tag": tag}).encode() + b"\n", mtime=0)
    (directory / "export.ndjson.gz").write_bytes(raw)
    return {
        "table": directory / "annotations.parquet",
        "coco": directory / "instances.json",
        "raw": directory / "export.ndjson.gz",
    }


def commit_inputs(
    store: DatasetStore, inputs: dict[str, Path], fields: dict[str, Any] | None = None
) -> Any:
    writer = store.begin()
    writer.add_file("table", inputs["table"], "annotations", ".parquet")
    writer.add_file("coco", inputs["coco"], "instances", ".json")
    writer.add_file("raw", inputs["raw"], "export", ".ndjson.gz")
    digest = digest_entries(writer.files)
    return writer.commit(digest, fields or {"counts": {"annotations": 3}})


def assert_consistent(store: DatasetStore, *, settled: bool = True) -> None:
    """Every committed version lists only files that exist; latest points at a committed one."""
    versions = store.list_versions()
    for version in versions:
        manifest = store.read_manifest(version)
        assert manifest["version_id"] == version
        for entry in manifest["files"]:
            data = store.objects.get(store.key(entry["key"]))
            assert data is not None, entry
        assert store.objects.exists(store.key(f"versions/{version}/README.md"))
    latest = store.latest()
    if latest is not None:
        assert latest.version_id in versions
        if settled:  # after a crash, a complete version may wait for a re-run to publish it
            assert latest.version_id == versions[-1]


# ------------------------------------------------------------------ object store basics


def test_object_store_basics(object_store: ObjectStore, tmp_path: Path) -> None:
    etag = object_store.put("a/b.txt", b"hello")
    assert object_store.get("a/b.txt") == b"hello"
    got = object_store.get_with_etag("a/b.txt")
    assert got is not None and got[0] == b"hello" and got[1] == etag
    assert object_store.exists("a/b.txt")
    assert not object_store.exists("a/c.txt")
    assert object_store.get("a/c.txt") is None
    src = tmp_path / "big.bin"
    src.write_bytes(b"x" * 100_000)
    object_store.put_file("a/big.bin", src)
    with object_store.open("a/big.bin") as fh:
        assert fh.read() == b"x" * 100_000
    assert list(object_store.list("a/")) == ["a/b.txt", "a/big.bin"]
    object_store.delete("a/b.txt")
    assert not object_store.exists("a/b.txt")
    with pytest.raises(FileNotFoundError):
        object_store.open("a/missing")
    assert object_store.uri_for("a/big.bin").endswith("a/big.bin")
    for bad in ["../x", "/abs", "a\\b"]:
        with pytest.raises(ValueError):
            object_store.put(bad, b"x")


def test_create_only_really_refuses(object_store: ObjectStore, tmp_path: Path) -> None:
    object_store.put("k", b"first", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        object_store.put("k", b"second", if_none_match=True)
    src = tmp_path / "f"
    src.write_bytes(b"third")
    with pytest.raises(PreconditionFailed):
        object_store.put_file("k", src, if_none_match=True)
    assert object_store.get("k") == b"first"


def test_cas_really_conflicts(object_store: ObjectStore) -> None:
    first = object_store.put("p", b"one", if_none_match=True)
    second = object_store.put("p", b"two", if_match=first)
    with pytest.raises(PreconditionFailed):
        object_store.put("p", b"three", if_match=first)  # stale etag
    assert object_store.get("p") == b"two"
    object_store.put("p", b"four", if_match=second)
    with pytest.raises(PreconditionFailed):
        object_store.put("missing", b"x", if_match=second)
    assert object_store.get("p") == b"four"


def test_multipart_upload_is_create_only(
    s3_store_uri: str, moto_server: str, tmp_path: Path
) -> None:
    objects = open_object_store(
        s3_store_uri, endpoint_url=moto_server, multipart_threshold=5 * 1024 * 1024
    )
    src = tmp_path / "large.bin"
    payload = bytes(range(256)) * (11 * 4096)  # ~11 MiB: three parts
    src.write_bytes(payload)
    objects.put_file("large.bin", src, if_none_match=True)
    assert objects.get("large.bin") == payload
    with pytest.raises(PreconditionFailed):
        objects.put_file("large.bin", src, if_none_match=True)


# ------------------------------------------------------------------ commits


def test_commit_versions_and_idempotence(object_store: ObjectStore, tmp_path: Path) -> None:
    store = DatasetStore(object_store, "proj-1", clock=fixed_clock)
    assert store.latest() is None
    with pytest.raises(NotFoundError):
        store.read_manifest("latest")
    a = write_inputs(tmp_path / "a", "a")
    first = commit_inputs(store, a)
    assert first.created and first.version_id == "v000001" and first.parent_version_id is None
    again = commit_inputs(store, a)
    assert not again.created and again.version_id is None
    assert again.current_version_id == "v000001"
    assert store.list_versions() == ["v000001"]
    b = write_inputs(tmp_path / "b", "b")
    mark = {"cursor": "data_row.details.last_activity_at", "value": "2026-01-01T00:00:00.000Z"}
    second = commit_inputs(store, b, {"counts": {"annotations": 3}, "watermark": mark})
    assert second.version_id == "v000002" and second.parent_version_id == "v000001"
    manifest = store.read_manifest("latest")
    assert manifest == store.read_manifest("v000002")
    assert manifest["watermark"] == mark
    assert manifest["dataset_id"] == "proj-1"
    assert {f["role"] for f in manifest["files"]} == {"table", "coco", "raw", "sql"}
    # The version's DuckDB views: written under its number, listed with their sha256.
    sql = next(f for f in manifest["files"] if f["role"] == "sql")
    assert sql["key"] == "versions/v000002/tables.sql"
    assert (
        hashlib.sha256(object_store.get(store.key(sql["key"])) or b"").hexdigest() == sql["sha256"]
    )
    table = next(f for f in manifest["files"] if f["role"] == "table")
    assert table["rows"] == 3
    assert table["sha256"] == file_sha256(b["table"])[0]
    assert table["key"].startswith("tables/annotations-") and table["key"].endswith(".parquet")
    card = object_store.get(store.key("versions/v000002/README.md"))
    assert card is not None and b"v000002" in card and b"v000001" in card
    assert_consistent(store)


def test_unchanged_table_is_not_uploaded_again(object_store: ObjectStore, tmp_path: Path) -> None:
    store = DatasetStore(object_store, "proj", clock=fixed_clock)
    a = write_inputs(tmp_path / "a", "a")
    commit_inputs(store, a)
    keys_before = set(object_store.list(""))
    b = write_inputs(tmp_path / "b", "b")
    b["table"] = a["table"]  # the table did not change
    commit_inputs(store, b)
    new = set(object_store.list("")) - keys_before
    assert not any(k.startswith("proj/tables/") for k in new)
    m1, m2 = store.read_manifest("v000001"), store.read_manifest("v000002")
    t1 = next(f for f in m1["files"] if f["role"] == "table")
    t2 = next(f for f in m2["files"] if f["role"] == "table")
    assert t1["key"] == t2["key"]


def test_reserved_manifest_fields_are_refused(object_store: ObjectStore, tmp_path: Path) -> None:
    store = DatasetStore(object_store, "proj")
    writer = store.begin()
    with pytest.raises(ValueError, match="reserved"):
        writer.commit("d", {"version_id": "v999999"})


def test_dataset_ids_never_escape(object_store: ObjectStore, tmp_path: Path) -> None:
    store = DatasetStore(object_store, "../../evil\\id", clock=fixed_clock)
    commit_inputs(store, write_inputs(tmp_path / "a", "a"))
    keys = list(object_store.list(""))
    assert keys and all(k.startswith(store.root + "/") for k in keys)
    assert ".." not in store.root.split("/") and "/" not in store.root
    if hasattr(object_store, "root"):
        root = Path(object_store.root)
        files = [p for p in root.parent.rglob("*") if p.is_file()]
        inputs = tmp_path / "a"
        assert all(p.is_relative_to(root) or p.is_relative_to(inputs) for p in files)


def test_run_record(object_store: ObjectStore) -> None:
    store = DatasetStore(object_store, "proj")
    uri = store.write_run_record("run/1", {"status": "running"})
    store.write_run_record("run/1", {"status": "done", "version": "v000001"})
    assert store.read_run_record("run/1") == {"status": "done", "version": "v000001"}
    assert uri.endswith("runs/run%2F1.json")


# ------------------------------------------------------------------ blobs


def count_requests(objects: ObjectStore) -> dict[str, int]:
    """Count S3 requests by operation name via a botocore event hook."""
    counts: dict[str, int] = {}

    def on_send(request: Any, **kwargs: Any) -> None:
        op = kwargs["event_name"].split(".")[-1]
        counts[op] = counts.get(op, 0) + 1

    objects.client.meta.events.register("before-send.s3.*", on_send)  # type: ignore[attr-defined]
    return counts


def test_blob_dedup(object_store: ObjectStore) -> None:
    import hashlib

    store = DatasetStore(object_store, "proj")
    png = b"\x89PNG fake but content-addressed"
    sha = hashlib.sha256(png).hexdigest()
    assert not store.has_blob(sha)
    assert store.put_blob(sha, png) is True
    assert store.has_blob(sha)
    counts = count_requests(object_store) if hasattr(object_store, "client") else None
    assert store.put_blob(sha, png) is False
    if counts is not None:
        assert counts.get("PutObject", 0) == 0 and counts == {"HeadObject": 1}
        counts.clear()
        store.load_blob_index()
        assert store.put_blob(sha, png) is False
        assert "PutObject" not in counts and "HeadObject" not in counts
    assert object_store.get(store.key(f"blobs/sha256/{sha[:2]}/{sha}.png")) == png
    with pytest.raises(ValueError):
        store.put_blob(sha, b"other bytes")


def test_seeded_blob_index_skips_heads(object_store: ObjectStore) -> None:
    import hashlib

    store = DatasetStore(object_store, "proj")
    old, new = b"old mask", b"new mask"
    old_sha, new_sha = hashlib.sha256(old).hexdigest(), hashlib.sha256(new).hexdigest()
    store.put_blob(old_sha, old)
    fresh = DatasetStore(object_store, "proj")  # the next run, seeded from the parent table
    fresh.seed_blob_index([old_sha])
    counts = count_requests(object_store) if hasattr(object_store, "client") else None
    assert fresh.put_blob(old_sha, old) is False
    assert fresh.put_blob(new_sha, new) is True
    assert fresh.put_blob(new_sha, new) is False
    if counts is not None:
        assert counts == {"PutObject": 1}
    assert object_store.get(fresh.key(f"blobs/sha256/{new_sha[:2]}/{new_sha}.png")) == new


def test_blob_present_race_is_not_an_error(object_store: ObjectStore) -> None:
    import hashlib

    store = DatasetStore(object_store, "proj")
    png = b"blob"
    sha = hashlib.sha256(png).hexdigest()
    store.load_blob_index()  # empty index: the next put skips the HEAD
    object_store.put(store.key(f"blobs/sha256/{sha[:2]}/{sha}.png"), png)  # another worker
    assert store.put_blob(sha, png) is False  # 412 means present


# ------------------------------------------------------------------ crash points


class Crash(Exception):
    """An injected failure."""


class FaultyStore:
    """Wrap an ObjectStore; fail before or after (response lost) the n-th write."""

    def __init__(self, inner: ObjectStore, fail_at: int | None, when: str) -> None:
        self.inner = inner
        self.fail_at = fail_at
        self.when = when
        self.writes: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _write(self, key: str, call: Callable[[], str]) -> str:
        index = len(self.writes)
        self.writes.append(key)
        if index == self.fail_at and self.when == "before":
            raise Crash(f"before write {index} {key}")
        result = call()
        if index == self.fail_at and self.when == "after":
            raise Crash(f"after write {index} {key} (landed, response lost)")
        return result

    def put(self, key: str, data: bytes, **kw: Any) -> str:
        return self._write(key, lambda: self.inner.put(key, data, **kw))

    def put_file(self, key: str, path: Any, **kw: Any) -> str:
        return self._write(key, lambda: self.inner.put_file(key, path, **kw))


def test_crash_at_every_write_then_rerun(object_store: ObjectStore, tmp_path: Path) -> None:
    a = write_inputs(tmp_path / "a", "a")
    b = write_inputs(tmp_path / "b", "b")
    # Fault-free reference, and the list of writes a commit makes.
    ref_store = DatasetStore(object_store, "reference", clock=fixed_clock)
    commit_inputs(ref_store, a)
    probe = FaultyStore(object_store, None, "before")
    commit_inputs(DatasetStore(probe, "reference", clock=fixed_clock), b)  # type: ignore[arg-type]
    n_writes = len(probe.writes)
    assert n_writes >= 5  # 3 files, README, manifest, _latest
    expected = ref_store.read_manifest("v000002")
    for fail_at in range(n_writes):
        for when in ("before", "after"):
            name = f"crash-{fail_at}-{when}"
            DatasetStore(object_store, name, clock=fixed_clock)
            commit_inputs(DatasetStore(object_store, name, clock=fixed_clock), a)
            faulty = FaultyStore(object_store, fail_at, when)
            with pytest.raises(Crash):
                commit_inputs(DatasetStore(faulty, name, clock=fixed_clock), b)  # type: ignore[arg-type]
            store = DatasetStore(object_store, name, clock=fixed_clock)
            # A reader never sees a partial version.
            assert_consistent(store, settled=False)
            result = commit_inputs(store, b)
            assert result.current_version_id == "v000002", (name, result)
            assert store.list_versions() == ["v000001", "v000002"], name
            got = store.read_manifest("latest")
            assert _without_sql(got) == _without_sql(expected), name
            # tables.sql names the dataset (and, on S3, its URIs): it differs from the
            # reference's, but the file the manifest lists is the one in the store.
            sql = next(f for f in got["files"] if f["role"] == "sql")
            stored = object_store.get(store.key(sql["key"])) or b""
            assert hashlib.sha256(stored).hexdigest() == sql["sha256"], name
            assert_consistent(store)


def _without_sql(manifest: dict[str, Any]) -> dict[str, Any]:
    """Return a manifest minus what depends on the dataset's id (and location)."""
    files = [f for f in manifest["files"] if f["role"] != "sql"]
    return {**manifest, "dataset_id": None, "files": files}


def test_s3_lost_responses_are_recognised_as_ours(
    s3_store_uri: str, moto_server: str, tmp_path: Path
) -> None:
    """The write lands, the response is lost, botocore retries and gets 412: still ours."""
    import urllib3
    from botocore.exceptions import ConnectionClosedError

    objects = open_object_store(s3_store_uri, endpoint_url=moto_server, retries=3)
    store = DatasetStore(objects, "proj", clock=fixed_clock)
    commit_inputs(store, write_inputs(tmp_path / "a", "a"))
    http = urllib3.PoolManager()
    dropped: list[str] = []

    def deliver_then_drop(request: Any, **kwargs: Any) -> None:
        url = str(request.url)
        if request.method != "PUT" or not (
            url.endswith("manifest.json") or url.endswith("_latest.json")
        ):
            return
        if url in dropped:
            return  # the retry goes through normally
        dropped.append(url)
        http.request("PUT", url, body=request.body, headers=dict(request.headers))
        raise ConnectionClosedError(endpoint_url=url)

    objects.client.meta.events.register("before-send.s3.PutObject", deliver_then_drop)  # type: ignore[attr-defined]
    result = commit_inputs(store, write_inputs(tmp_path / "b", "b"))
    assert len(dropped) == 2
    assert result.created and result.version_id == "v000002" and result.latest_moved
    assert store.list_versions() == ["v000001", "v000002"]
    latest = store.latest()
    assert latest is not None and latest.version_id == "v000002"


# ------------------------------------------------------------------ concurrency


def test_concurrent_commits_threads(object_store: ObjectStore, tmp_path: Path) -> None:
    store = DatasetStore(object_store, "proj")
    inputs = [write_inputs(tmp_path / str(i), str(i)) for i in range(4)]
    writers = []
    for inp in inputs:  # everyone reads the same _latest.json before anyone commits
        w = store.begin()
        w.add_file("table", inp["table"], "annotations", ".parquet")
        writers.append(w)
    results: list[Any] = [None] * len(writers)
    barrier = threading.Barrier(len(writers))

    def run(i: int) -> None:
        barrier.wait()
        results[i] = writers[i].commit(digest_entries(writers[i].files), {})

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(writers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [r.version_id for r in results]
    assert sorted(ids) == ["v000001", "v000002", "v000003", "v000004"]
    assert store.list_versions() == sorted(ids)
    assert_consistent(store)
    parents = {store.read_manifest(v)["parent_version_id"] for v in ids}
    assert parents == {None, "v000001", "v000002", "v000003"}


class HookBeforeLatest:
    """Wrap an ObjectStore; run a callback once, just before the first `_latest.json` write."""

    def __init__(self, inner: ObjectStore, hook: Callable[[], None]) -> None:
        self.inner = inner
        self.hook: Callable[[], None] | None = hook

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def put(self, key: str, data: bytes, **kw: Any) -> str:
        if key.endswith("_latest.json") and self.hook is not None:
            hook, self.hook = self.hook, None
            hook()
        return self.inner.put(key, data, **kw)


def test_latest_never_moves_backwards(object_store: ObjectStore, tmp_path: Path) -> None:
    """A takes v1 but B rebases onto it and publishes v2 before A moves the pointer."""
    a_in, b_in = write_inputs(tmp_path / "a", "a"), write_inputs(tmp_path / "b", "b")
    b_result: list[Any] = []
    b_writer = DatasetStore(object_store, "proj").begin()  # same (empty) parent as A
    b_writer.add_file("table", b_in["table"], "annotations", ".parquet")

    def b_commits() -> None:
        b_result.append(b_writer.commit(digest_entries(b_writer.files), {}))

    wrapped = HookBeforeLatest(object_store, b_commits)
    a_writer = DatasetStore(wrapped, "proj").begin()  # type: ignore[arg-type]
    a_writer.add_file("table", a_in["table"], "annotations", ".parquet")
    a = a_writer.commit(digest_entries(a_writer.files), {})
    (b,) = b_result
    assert a.version_id == "v000001" and a.created and not a.latest_moved
    assert b.version_id == "v000002" and b.parent_version_id == "v000001" and b.latest_moved
    store = DatasetStore(object_store, "proj")
    latest = store.latest()
    assert latest is not None and latest.version_id == "v000002"
    manifest = store.read_manifest("v000002")
    assert "rebased_from" in manifest and manifest["rebased_from"] is None
    assert_consistent(store)


def test_concurrent_same_content_makes_one_version(
    object_store: ObjectStore, tmp_path: Path
) -> None:
    store = DatasetStore(object_store, "proj")
    inp = write_inputs(tmp_path / "x", "x")
    writers = [store.begin() for _ in range(3)]
    for w in writers:
        w.add_file("table", inp["table"], "annotations", ".parquet")
    results = [w.commit(digest_entries(w.files), {}) for w in writers]
    assert [r.created for r in results] == [True, False, False]
    assert store.list_versions() == ["v000001"]
    assert {r.current_version_id for r in results} == {"v000001"}


def _process_commit(uri: str, endpoint: str | None, tag: str, workdir: str) -> str | None:
    objects = open_object_store(uri, endpoint_url=endpoint)
    store = DatasetStore(objects, "proj")
    result = commit_inputs(store, write_inputs(Path(workdir) / tag, tag))
    return result.version_id  # type: ignore[no-any-return]


def test_concurrent_commits_processes(
    object_store_uri: str, moto_server: str, tmp_path: Path
) -> None:
    endpoint = moto_server if object_store_uri.startswith("s3://") else None
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(3) as pool:
        ids = pool.starmap(
            _process_commit,
            [(object_store_uri, endpoint, f"p{i}", str(tmp_path)) for i in range(3)],
        )
    assert sorted(ids) == ["v000001", "v000002", "v000003"]  # type: ignore[type-var]
    store = DatasetStore(open_object_store(object_store_uri, endpoint_url=endpoint), "proj")
    assert_consistent(store)


# ------------------------------------------------------------------ SSE


@pytest.mark.parametrize(
    ("sse", "kms_key_id"), [("AES256", None), ("aws:kms", "alias/labelhaul-test")]
)
def test_every_object_is_encrypted(
    s3_bucket: str,
    s3_client: Any,
    moto_server: str,
    tmp_path: Path,
    sse: str,
    kms_key_id: str | None,
) -> None:
    import hashlib

    objects = open_object_store(
        f"s3://{s3_bucket}/root",
        endpoint_url=moto_server,
        sse=sse,
        kms_key_id=kms_key_id,
        multipart_threshold=5 * 1024 * 1024,
    )
    store = DatasetStore(objects, "proj")
    commit_inputs(store, write_inputs(tmp_path / "a", "a"))
    store.put_blob(hashlib.sha256(b"m").hexdigest(), b"m")
    store.write_run_record("r1", {"ok": True})
    big = tmp_path / "big.bin"
    big.write_bytes(b"z" * (6 * 1024 * 1024))
    writer = store.begin()
    writer.add_file("raw", big, "big", ".bin")
    writer.commit(digest_entries(writer.files), {})
    # A reused old object is renewed by a self-copy: it must stay encrypted too.
    from datetime import timedelta

    always_old = DatasetStore(objects, "proj", freshen_after=timedelta(seconds=-1))
    copies = count_requests(objects)
    assert always_old.put_blob(hashlib.sha256(b"m").hexdigest(), b"m") is False
    assert copies.get("CopyObject") == 1
    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert len(keys) >= 10
    for key in keys:
        head = s3_client.head_object(Bucket=s3_bucket, Key=key)
        assert head.get("ServerSideEncryption") == sse, key
        if kms_key_id:
            assert kms_key_id in head.get("SSEKMSKeyId", ""), key


def test_reader_never_sees_a_partial_version_while_commits_land(
    object_store: ObjectStore, tmp_path: Path
) -> None:
    writer_store = DatasetStore(object_store, "proj")
    done = threading.Event()
    seen: set[str] = set()
    problems: list[str] = []

    def read_loop() -> None:
        reader = DatasetStore(object_store, "proj")
        while not done.is_set():
            pointer = reader.latest()
            if pointer is None:
                continue
            manifest = reader.read_manifest(pointer.version_id)
            seen.add(pointer.version_id)
            for entry in manifest["files"]:
                if not object_store.exists(reader.key(entry["key"])):
                    problems.append(f"{pointer.version_id}: {entry['key']} missing")

    thread = threading.Thread(target=read_loop)
    thread.start()
    try:
        for i in range(5):
            commit_inputs(writer_store, write_inputs(tmp_path / str(i), str(i)))
    finally:
        done.set()
        thread.join()
    assert problems == []
    assert seen and seen <= set(writer_store.list_versions())


def test_reused_old_objects_are_freshened(object_store: ObjectStore, tmp_path: Path) -> None:
    """An orphan a commit reuses gets a new last-modified time, so gc's grace restarts."""
    import hashlib
    import time
    from datetime import timedelta

    now = [datetime.now(UTC)]
    store = DatasetStore(object_store, "proj", clock=lambda: now[0])
    png = b"orphan mask of a crashed run"
    sha = hashlib.sha256(png).hexdigest()
    store.put_blob(sha, png)
    inputs = write_inputs(tmp_path / "a", "a")
    entry = store.begin().add_file("table", inputs["table"], "annotations", ".parquet")
    keys = [store.key(f"blobs/sha256/{sha[:2]}/{sha}.png"), store.key(entry.key)]
    before = [object_store.last_modified(k) for k in keys]
    time.sleep(1.1)  # S3's LastModified has one-second resolution

    assert store.put_blob(sha, png) is False  # young: not touched
    store.begin().add_file("table", inputs["table"], "annotations", ".parquet")
    assert [object_store.last_modified(k) for k in keys] == before

    now[0] += timedelta(hours=7)  # by the store's clock they are old now
    assert store.put_blob(sha, png) is False
    store.begin().add_file("table", inputs["table"], "annotations", ".parquet")
    after = [object_store.last_modified(k) for k in keys]
    assert all(
        a is not None and b is not None and a > b for a, b in zip(after, before, strict=True)
    )
    assert object_store.get(keys[0]) == png
    assert object_store.get(keys[1]) == inputs["table"].read_bytes()


def test_version_ids_are_never_reused_after_latest_is_lost(
    object_store: ObjectStore, tmp_path: Path
) -> None:
    """Issue 13 item 2: with `_latest.json` gone, numbering continues after the highest."""
    store = DatasetStore(object_store, "proj", clock=fixed_clock)
    for tag in ("a", "b", "c"):
        commit_inputs(store, write_inputs(tmp_path / tag, tag))
    # gc took v000001 (an old version) and the pointer was lost.
    object_store.delete(store.key(store.manifest_key("v000001")))
    object_store.delete(store.key("_latest.json"))
    result = commit_inputs(store, write_inputs(tmp_path / "d", "d"))
    assert result.created and result.version_id == "v000004"
    assert store.list_versions() == ["v000002", "v000003", "v000004"]
    latest = store.latest()
    assert latest is not None and latest.version_id == "v000004"
