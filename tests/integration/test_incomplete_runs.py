"""Runs that must not commit an incomplete version (issue 13, items 1-8), through the real flow.

Each test drives `sync_project` under Prefect's engine against the emulator, on the local
store and on moto's S3 server where storage is involved.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from labelhaul.emulator import EmulatorServer
from labelhaul.reader import open_dataset
from tests.helpers import sync_project_ok as sync

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture(params=["local", "s3"])
def store_uri(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """A store on the local disk or in a fresh bucket of moto's S3 server."""
    if request.param == "local":
        yield str(tmp_path / "store")
    else:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", request.getfixturevalue("moto_server"))
        yield request.getfixturevalue("s3_store_uri")


def _open(store: str, pid: str) -> Any:
    import os

    return open_dataset(store, pid, endpoint_url=os.environ.get("AWS_ENDPOINT_URL_S3"))


def sync_state(pid: str, store: str, **kwargs: Any) -> Any:
    """Run the sync flow and return its final state (completed or not)."""
    from labelhaul.flows.params import SyncMode
    from labelhaul.flows.sync_project import sync_project

    kwargs.setdefault("mode", SyncMode.full)
    return sync_project(pid, store=store, return_state=True, **kwargs)


def test_mask_outage_fails_the_run_and_the_next_run_fetches_those_rows(
    lb_env: EmulatorServer, store_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 1: masks lost to 5xx never reach `latest`; the rows are fetched again later."""
    from labelhaul.flows.params import SyncMode

    monkeypatch.setenv("LABELHAUL_HTTP_RETRIES", "1")
    pid = lb_env.add_synthetic_project(n_rows=6, instances=2)
    first = sync(pid, store_uri)
    assert first["version_id"] == "v000001"

    lb_env.edit_rows(pid, [1, 4])
    lb_env.faults.set("mask", "5xx", rate=1.0, status=503)
    state = sync_state(pid, store_uri, mode=SyncMode.incremental, overlap_minutes=0)
    assert state.is_failed()
    assert "4 of 4 masks could not be downloaded for transient reasons" in state.message
    assert "HTTP 503: 4" in state.message and "latest stays v000001" in state.message
    with _open(store_uri, pid) as ds:
        assert ds.versions() == ["v000001"]

    # The outage is over: the next incremental run still sees the two edited rows.
    lb_env.faults.clear()
    after = sync(pid, store_uri, mode=SyncMode.incremental, overlap_minutes=0)
    assert after["created"] and after["rows_exported"] == 2
    with _open(store_uri, pid) as ds:
        ann = ds.table("annotations")
        masks = ann[ann["annotation_kind"] == "ImageSegmentationMask"]
        assert len(masks) == 12 and masks["mask_sha256"].notna().all()


def test_permanent_mask_errors_above_the_tolerated_fraction_fail_the_run(
    lb_env: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 1's setting: permanent mask errors are tolerated up to a fraction, then refused."""
    monkeypatch.setenv("LABELHAUL_HTTP_RETRIES", "0")
    monkeypatch.setenv("LABELHAUL_MAX_MASK_ERROR_FRACTION", "0.5")
    pid = lb_env.add_synthetic_project(n_rows=2, instances=2)
    lb_env.faults.set("mask", "5xx", rate=1.0, status=404)
    state = sync_state(pid, str(tmp_path / "store"))
    assert state.is_failed()
    assert "4 of 4 masks failed for good" in state.message
    assert "LABELHAUL_MAX_MASK_ERROR_FRACTION=0.5" in state.message
    assert not (tmp_path / "store" / pid / "_latest.json").exists()


def test_a_short_stream_fails_the_stage_and_commits_nothing(
    lb_env: EmulatorServer, tmp_path: Path
) -> None:
    """Item 5: a RESULT stream shorter than its header is a failed stage, not a version."""
    pid = lb_env.add_synthetic_project(n_rows=5, instances=1)
    lb_env.header_extra_lines = 1
    state = sync_state(pid, str(tmp_path / "store"))
    assert state.is_failed()
    assert "held 5 lines where its header counts 6" in state.message
    assert not (tmp_path / "store" / pid / "versions").exists()


def test_a_store_that_ignores_conditional_writes_is_refused_with_the_fix(
    lb_env: EmulatorServer,
    moto_server: str,
    s3_bucket: str,
    s3_client: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Item 7: `sync` checks conditional writes once (remembered in the store) and refuses."""
    from bench.harness import FaultProxy
    from labelhaul.writecheck import MARKER

    pid = lb_env.add_synthetic_project(n_rows=2, instances=1)
    store = f"s3://{s3_bucket}/store"
    with FaultProxy(moto_server, drop_conditions=True) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.url)
        state = sync_state(pid, store)
        assert state.is_failed()
        assert "ignores conditional writes" in state.message
        assert "LABELHAUL_SINGLE_WRITER=true" in state.message
        listed = s3_client.list_objects_v2(Bucket=s3_bucket).get("Contents", [])
        keys = [o["Key"] for o in listed]
        assert not [k for k in keys if "/versions/" in k or k.endswith(MARKER)], keys

        # The documented way out for a store with one writer only.
        monkeypatch.setenv("LABELHAUL_SINGLE_WRITER", "true")
        assert sync(pid, store)["version_id"] == "v000001"

    # Straight to moto, which honours the conditions: checked once, then remembered.
    monkeypatch.delenv("LABELHAUL_SINGLE_WRITER")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server)
    sync(pid, store)
    marker = s3_client.get_object(Bucket=s3_bucket, Key=f"store/{MARKER}")["Body"].read()
    assert b'"supported": true' in marker


def _blob_key_of(store: str, pid: str) -> tuple[str, str]:
    """Return (sha, object key relative to the store root) of one blob latest references."""
    with _open(store, pid) as ds:
        ann = ds.table("annotations")
        sha = str(ann["mask_sha256"].dropna().iloc[0])
    return sha, f"{pid}/blobs/sha256/{sha[:2]}/{sha}.png"


def _delete(store: str, key: str, s3: Any) -> None:
    if store.startswith("s3://"):
        bucket, _, prefix = store[len("s3://") :].partition("/")
        s3.delete_object(Bucket=bucket, Key=f"{prefix}/{key}")
    else:
        (Path(store) / key).unlink()


def _exists(store: str, key: str, s3: Any) -> bool:
    if store.startswith("s3://"):
        bucket, _, prefix = store[len("s3://") :].partition("/")
        return "Contents" in s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/{key}")
    return (Path(store) / key).is_file()


def test_a_full_sync_uploads_again_a_blob_gone_from_the_store(
    lb_env: EmulatorServer, store_uri: str, s3_client: Any
) -> None:
    """Item 2: a full sync verifies what it lists instead of trusting the parent."""
    pid = lb_env.add_synthetic_project(n_rows=3, instances=2)
    sync(pid, store_uri)
    sha, key = _blob_key_of(store_uri, pid)
    _delete(store_uri, key, s3_client)
    again = sync(pid, store_uri)
    assert not again["created"]  # same content: the version it keeps is whole again
    assert _exists(store_uri, key, s3_client), sha


def test_verify_finds_and_repairs_missing_blobs_and_the_next_sync_runs_full(
    lb_env: EmulatorServer, tmp_path: Path
) -> None:
    """Item 2: `labelhaul verify` notes lost blobs (the next sync runs full) or repairs them."""
    import json
    import subprocess
    import sys

    from labelhaul.flows.params import SyncMode

    store = str(tmp_path / "store")
    pid = lb_env.add_synthetic_project(n_rows=3, instances=2)
    sync(pid, store)
    sha, key = _blob_key_of(store, pid)

    def verify(*extra: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "labelhaul", "verify", store, "--dataset", pid, *extra]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300)

    (Path(store) / key).unlink()
    found = verify()
    assert found.returncode == 1, found.stderr
    assert f"missing blob {sha}" in found.stdout and "next sync runs full" in found.stderr
    assert (tmp_path / "store" / pid / "_missing_blobs.json").is_file()
    inc = sync(pid, store, mode=SyncMode.incremental)
    assert inc["mode"] == "full" and (Path(store) / key).is_file()
    note = json.loads((tmp_path / "store" / pid / "_missing_blobs.json").read_text())
    assert note["missing"] == []  # cleared (overwritten: the sync role cannot delete)

    (Path(store) / key).unlink()
    repaired = verify("--repair")
    assert repaired.returncode == 0, repaired.stderr
    assert f"repaired blob {sha}" in repaired.stdout
    assert (Path(store) / key).is_file()
    assert verify().returncode == 0


def test_a_gc_during_the_sync_is_noticed_before_the_commit(
    lb_env: EmulatorServer, store_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 3: gc deleting a sync's in-flight blobs fails the sync instead of a broken commit."""
    import inspect

    import labelhaul.tasks.store
    from labelhaul.flows.params import SyncMode

    from labelhaul.gc import collect_garbage
    from labelhaul.storage import open_object_store
    from labelhaul.store import DatasetStore

    pid = lb_env.add_synthetic_project(n_rows=4, instances=2)
    sync(pid, store_uri)
    lb_env.edit_rows(pid, [2])
    real_land = labelhaul.tasks.store.land_version
    force = {"force": True} if "force" in inspect.signature(collect_garbage).parameters else {}

    collected: list[int] = []

    def gc_then_land(store: Any, *args: Any, **kwargs: Any) -> Any:
        # A gc with no grace runs just before the commit: the new blobs are unreferenced.
        if not collected:
            collected.append(collect_garbage(store, keep=1, grace_hours=0, **force).deleted_blobs)
        return real_land(store, *args, **kwargs)

    monkeypatch.setattr(labelhaul.tasks.store, "land_version", gc_then_land)
    state = sync_state(pid, store_uri, mode=SyncMode.incremental, overlap_minutes=0)
    assert collected[0] > 0
    assert state.is_failed()
    assert "started at" in state.message and "nothing committed" in state.message
    monkeypatch.setattr(labelhaul.tasks.store, "land_version", real_land)
    with _open(store_uri, pid) as ds:
        assert ds.versions() == ["v000001"]
    # Without gc in the way the re-run lands a whole version.
    after = sync(pid, store_uri, mode=SyncMode.incremental, overlap_minutes=0)
    assert after["version_id"] == "v000002"
    objects = open_object_store(store_uri)
    from bench.harness import validate_latest

    assert validate_latest(objects, pid).problems == []
    assert DatasetStore(objects, pid).latest() is not None


def test_a_row_stamped_in_the_future_does_not_stop_incremental_runs(
    lb_env: EmulatorServer, tmp_path: Path
) -> None:
    """Item 4: a 2099 timestamp is a warning naming the row, not the watermark."""
    import gzip
    import json
    from datetime import UTC, datetime

    from labelhaul.flows.params import SyncMode

    store = str(tmp_path / "store")
    pid = lb_env.add_synthetic_project(n_rows=4, instances=1)
    lb_env.edit_rows(pid, [0], at=datetime(2099, 1, 1, tzinfo=UTC))
    first = sync(pid, store)
    with _open(store, pid) as ds:
        watermark = ds.manifest()["watermark"]["value"]
        assert watermark < first["started_at"], watermark
        entry = ds.file_entry("errors", "run_errors")
        errors = [
            json.loads(x)
            for x in gzip.decompress(ds.local_file(entry).read_bytes()).split(b"\n")
            if x
        ]
    spec = lb_env.synthetic_spec(pid)
    (bad,) = [e for e in errors if e["kind"] == "timestamp_out_of_range"]
    assert bad["data_row_id"] == spec.data_row_id(0) and "2099" in bad["message"]

    lb_env.edit_rows(pid, [3])  # an edit after the first sync is still seen
    second = sync(pid, store, mode=SyncMode.incremental, overlap_minutes=0)
    assert second["created"] and second["rows_exported"] >= 1
