"""gc on both stores (local and moto's S3 server), from the CLI, and beside a running sync."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from labelhaul.cli import main
from labelhaul.emulator import EmulatorServer
from labelhaul.gc import collect_garbage
from labelhaul.keys import blob_key
from labelhaul.reader import open_dataset
from labelhaul.storage import open_object_store
from labelhaul.store import DatasetStore
from tests.helpers import sync_project_ok as _sync
from tests.unit.test_gc import (
    DATASET,
    FUTURE,
    all_keys,
    assert_version_complete,
    blob,
    make_version,
)


def _open(uri: str, moto_server: str, dataset: str | None = DATASET) -> DatasetStore:
    endpoint = moto_server if uri.startswith("s3://") else None
    objects = open_object_store(uri, endpoint_url=endpoint, retries=3, timeout_s=10)
    return DatasetStore(objects, dataset)


def test_keep_n_on_both_stores_leaves_every_retained_version_whole(
    object_store_uri: str, moto_server: str, tmp_path: Path
) -> None:
    store = _open(object_store_uri, moto_server)
    masks = [["a", "b"], ["b", "c"], ["c", "d"], ["d", "e"], ["e", "f"]]
    for i, names in enumerate(masks):
        make_version(store, tmp_path / "src", names, extra=str(i))
    report = collect_garbage(store, keep=2, now=FUTURE)
    assert report.deleted_versions == ["v000001", "v000002", "v000003"]
    assert store.list_versions() == ["v000004", "v000005"]
    assert store.latest() is not None and store.latest().version_id == "v000005"  # type: ignore[union-attr]
    blobs = {k.rsplit("/", 1)[-1][:-4] for k in store.objects.list(store.key("blobs"))}
    assert blobs == {blob(n)[0] for n in "def"}
    for version_id in ("v000004", "v000005"):
        assert_version_complete(store, version_id, tmp_path)
    # Nothing left that no version references: a second run finds nothing to do.
    again = collect_garbage(store, keep=2, now=FUTURE)
    assert (again.deleted_versions, again.deleted_files, again.deleted_blobs) == ([], 0, 0)


def test_grace_period_on_both_stores(
    object_store_uri: str, moto_server: str, tmp_path: Path
) -> None:
    store = _open(object_store_uri, moto_server)
    make_version(store, tmp_path / "src", ["a"])
    make_version(store, tmp_path / "src", ["b"])
    midpoint = datetime.now(UTC)
    # S3's LastModified has whole seconds: make sure the in-flight blob lands after midpoint.
    time.sleep(1.2)
    young_sha, young = blob("in-flight")
    store.put_blob(young_sha, young)
    report = collect_garbage(
        store, keep=1, grace_hours=1, now=midpoint + timedelta(hours=1), force=True
    )
    assert store.objects.exists(store.key(blob_key(young_sha)))
    assert not store.objects.exists(store.key(blob_key(blob("a")[0])))
    assert report.kept_young == 1 and report.deleted_blobs == 1
    assert_version_complete(store, "v000002", tmp_path)


def test_dry_run_on_both_stores_deletes_nothing(
    object_store_uri: str, moto_server: str, tmp_path: Path
) -> None:
    store = _open(object_store_uri, moto_server)
    for names in (["a"], ["b"], ["c"]):
        make_version(store, tmp_path / "src", names)
    before = all_keys(store.objects)
    report = collect_garbage(store, keep=1, now=FUTURE, dry_run=True)
    assert report.deleted_versions == ["v000001", "v000002"] and report.deleted_blobs == 2
    assert all_keys(store.objects) == before


def test_cli_gc_dry_run_then_json(
    s3_store_uri: str, moto_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = _open(s3_store_uri, moto_server)
    for names in (["a"], ["b"], ["c"]):
        make_version(store, tmp_path / "src", names)
    common = [s3_store_uri, "--dataset", DATASET, "--keep", "1", "--grace-hours", "0", "--force"]
    common += ["--endpoint-url", moto_server]
    assert main(["gc", *common, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would delete version versions/v000001/manifest.json" in out
    assert f"would delete blob blobs/sha256/{blob('a')[0][:2]}/{blob('a')[0]}.png" in out
    assert store.list_versions() == ["v000001", "v000002", "v000003"]
    assert main(["gc", *common, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["deleted_versions"] == ["v000001", "v000002"]
    assert report["deleted_blobs"] == 2 and report["latest"] == "v000003"
    assert store.list_versions() == ["v000003"]


def test_cli_gc_refuses_a_uri_without_a_dataset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = DatasetStore(open_object_store(str(tmp_path / "store")), DATASET)
    make_version(store, tmp_path / "src", ["a"])
    # The store root without --dataset: no pointer there, so nothing is touched.
    assert main(["gc", str(tmp_path / "store"), "--keep", "1"]) == 1
    assert "--dataset" in capsys.readouterr().err
    assert main(["gc", str(tmp_path / "store"), "--dataset", DATASET, "--keep", "0"]) == 1


# --------------------------------------------------------------------------- with the flow


def _read_fully(uri: str, moto_server: str, dataset: str, version: str) -> int:
    """Read every table, the COCO file and every mask of a version; return the mask count."""
    with open_dataset(uri, dataset, endpoint_url=moto_server) as ds:
        manifest = ds.manifest(version)
        for entry in manifest["files"]:
            ds.local_file(entry)  # raises when missing
        ds.coco(version)
        ann = ds.table("annotations", version)
        rows = ann[ann["mask_sha256"].notna()]
        for _, row in rows.iterrows():
            mask = ds.mask(row, version)
            assert mask.shape == (row["image_height"], row["image_width"])
            assert int((mask > 0).sum()) == int(row["mask_area"])
        return len(rows)


@pytest.mark.usefixtures("prefect_harness")
def test_gc_in_a_loop_beside_a_running_sync_leaves_its_version_whole(
    lb_env: EmulatorServer,
    s3_store_uri: str,
    moto_server: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server)
    pid = lb_env.add_synthetic_project(n_rows=10, instances=3)
    lb_env.task_seconds = 1.0  # the export takes a while: gc runs through every stage
    store = _open(s3_store_uri, moto_server, pid)
    for names in (["old-a"], ["old-b"], ["old-c"]):
        make_version(store, tmp_path / "src", names)

    result: dict[str, Any] = {}
    failure: list[BaseException] = []

    def run() -> None:
        try:
            result.update(_sync(pid, s3_store_uri))
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            failure.append(exc)

    sync = threading.Thread(target=run)
    sync.start()
    rounds = 0
    deleted_versions: list[str] = []
    # Versions: no age limit (grace 0 for them); unreferenced data: a grace period, so the
    # blobs and files the sync writes before its manifest are never taken from under it.
    while sync.is_alive() or rounds == 0:
        report = collect_garbage(store, keep=1, grace_hours=1, force=True)
        deleted_versions += report.deleted_versions
        rounds += 1
        time.sleep(0.05)
    sync.join(timeout=300)
    assert not failure, failure
    assert result["created"] and result["version_id"] == "v000004"
    assert rounds > 1
    # v1 and v2 at once; v3 too if a round ran after v4 was published.
    assert deleted_versions[:2] == ["v000001", "v000002"]
    assert set(deleted_versions) <= {"v000001", "v000002", "v000003"}
    assert store.list_versions() in (["v000004"], ["v000003", "v000004"])
    n_masks = _read_fully(s3_store_uri, moto_server, pid, "v000004")
    assert n_masks > 0

    # Once nothing is in flight: with no grace everything unreferenced goes, and the
    # flow's version (its blobs come from its real annotations table) stays whole.
    final = collect_garbage(store, keep=1, grace_hours=0, force=True)
    assert store.list_versions() == ["v000004"]
    assert final.deleted_blobs == 3  # the old versions' blobs: young until now
    for name in ("old-a", "old-b", "old-c"):
        assert not store.objects.exists(store.key(blob_key(blob(name)[0])))
    assert _read_fully(s3_store_uri, moto_server, pid, "v000004") == n_masks
