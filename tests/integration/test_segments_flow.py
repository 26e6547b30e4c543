"""Incremental syncs land delta segments; readers, pull, diff and gc see whole tables.

Through the real flow (Prefect harness, emulator, local store and moto's S3 server): the
delta version's logical tables and COCO equal those of a full sync of the same final state,
and only the changed rows are uploaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from labelhaul.flows.params import SyncMode

from labelhaul.emulator import EmulatorServer
from labelhaul.gc import collect_garbage
from labelhaul.reader import diff_versions, open_dataset, pull_version
from labelhaul.segments import manifest_segments
from labelhaul.storage import open_object_store
from labelhaul.store import DatasetStore, FileMissingError
from tests.helpers import sync_project_ok as _sync

pytestmark = pytest.mark.usefixtures("prefect_harness")

VOLATILE = ["mask_url", "composite_url"]


def _rows(df: pd.DataFrame) -> list[str]:
    """Return a table's rows as sorted JSON (order-independent, volatile columns left out)."""
    df = df.drop(columns=[c for c in VOLATILE if c in df.columns])
    return sorted(df.to_json(orient="records", lines=True).splitlines())


def _coco_by_feature(coco: dict[str, Any]) -> tuple[Any, ...]:
    anns = sorted(
        (json.dumps({k: v for k, v in a.items() if k != "id"}, sort_keys=True))
        for a in coco["annotations"]
    )
    images = sorted(json.dumps(i, sort_keys=True) for i in coco["images"])
    return images, anns, coco["categories"]


def _open(uri: str, endpoint: str | None, pid: str) -> Any:
    return open_dataset(uri, pid, endpoint_url=endpoint)


def test_incremental_lands_a_delta_that_reads_as_the_full_state(
    lb_env: EmulatorServer,
    object_store_uri: str,
    moto_server: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    endpoint = moto_server if object_store_uri.startswith("s3://") else None
    if endpoint:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)
    # Small tables: a one-row delta is a large fraction of them, so allow any size; the
    # third delta compacts (at most 3 segments).
    monkeypatch.setenv("LABELHAUL_COMPACT_FRACTION", "100")
    monkeypatch.setenv("LABELHAUL_MAX_TABLE_SEGMENTS", "3")
    pid = lb_env.add_synthetic_project(n_rows=12, instances=2)
    _sync(pid, object_store_uri, mode=SyncMode.full)

    lb_env.edit_rows(pid, [4])
    second = _sync(pid, object_store_uri, mode=SyncMode.incremental, overlap_minutes=0)
    assert second["created"] and second["rows_exported"] == 1

    ref_uri = str(tmp_path / "ref")
    _sync(pid, ref_uri, mode=SyncMode.full)
    with _open(object_store_uri, endpoint, pid) as ds, open_dataset(ref_uri, pid) as ref:
        manifest = ds.manifest()
        segs = manifest_segments(ds.load_manifest())
        assert [s.index for s in segs] == [0, 1]
        # The delta holds only the relabelled row; its overrides name exactly that row.
        drid = lb_env.synthetic_spec(pid).data_row_id(4)
        assert segs[1].tables["data_rows"].rows == 1
        assert manifest["counts"]["data_rows"] == 12
        # COCO is not uploaded again: listed as derived, with its digest.
        assert not [f for f in manifest["files"] if f["role"] == "coco"]
        assert [d["name"] for d in manifest["derived_files"]] == ["instances"]
        assert manifest["content_digest"] == ref.manifest()["content_digest"]

        for table in ("data_rows", "annotations", "classifications", "labels"):
            assert _rows(ds.table(table)) == _rows(ref.table(table)), table
        assert drid in set(ds.table("data_rows")["data_row_id"])

        coco, ref_coco = ds.coco(), ref.coco()
        assert _coco_by_feature(coco) == _coco_by_feature(ref_coco)
        n_annotations = len(ref.table("annotations"))
        from pycocotools.coco import COCO

        api = COCO()
        api.dataset = coco
        api.createIndex()
        assert len(api.getAnnIds()) == len(ref_coco["annotations"])

        changes = diff_versions(ds, "v000001", "v000002")
        assert changes["tables"]["data_rows"]["changed_ids"] == [drid]
        assert changes["tables"]["data_rows"]["added"] == 0

        pulled = pull_version(ds, "latest", tmp_path / "pulled")
        assert "coco/instances.json" in pulled["files"]
        assert json.loads((tmp_path / "pulled/coco/instances.json").read_text()) == coco
        assert len(pd.read_parquet(tmp_path / "pulled/tables/data_rows.parquet")) == 12

    # The CLI on a delta version: `show` lists segments and the derived COCO; `versions`
    # counts the logical rows.
    if endpoint is None:
        from labelhaul.cli import main

        assert main(["show", object_store_uri, "--dataset", pid]) == 0
        out = capsys.readouterr().out
        assert "segment=1" in out and "rebuilt from the tables" in out
        assert main(["versions", object_store_uri, "--dataset", pid, "--json"]) == 0
        listed = json.loads(capsys.readouterr().out)
        assert [v["data_rows"] for v in listed["versions"]] == [12, 12]

    # gc keeps what the retained delta version needs: its parent's base segments.
    objects = open_object_store(object_store_uri, endpoint_url=endpoint)
    report = collect_garbage(DatasetStore(objects, pid), keep=1, grace_hours=0, force=True)
    assert report.deleted_versions == ["v000001"]
    with _open(object_store_uri, endpoint, pid) as ds:
        assert len(ds.table("annotations")) == n_annotations
        assert ds.coco()["annotations"]

    # A second delta stacks; the third compacts back to one base with a stored COCO file.
    lb_env.edit_rows(pid, [7])
    _sync(pid, object_store_uri, mode=SyncMode.incremental, overlap_minutes=0)
    with _open(object_store_uri, endpoint, pid) as ds:
        assert [s.index for s in manifest_segments(ds.load_manifest())] == [0, 1, 2]
    lb_env.edit_rows(pid, [9])
    _sync(pid, object_store_uri, mode=SyncMode.incremental, overlap_minutes=0)
    _sync(pid, ref_uri, mode=SyncMode.full)
    with _open(object_store_uri, endpoint, pid) as ds, open_dataset(ref_uri, pid) as ref:
        manifest = ds.manifest()
        assert [s.index for s in manifest_segments(ds.load_manifest())] == [0]
        assert "derived_files" not in manifest
        assert [f["name"] for f in manifest["files"] if f["role"] == "coco"] == ["instances"]
        assert manifest["content_digest"] == ref.manifest()["content_digest"]


def test_a_parent_segment_gone_fails_incremental_naming_full_sync_and_full_recovers(
    lb_env: EmulatorServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from labelhaul.flows.sync_project import sync_project

    monkeypatch.setenv("LABELHAUL_COMPACT_FRACTION", "100")
    pid = lb_env.add_synthetic_project(n_rows=6, instances=1)
    store = tmp_path / "store"
    _sync(pid, str(store), mode=SyncMode.full)
    lb_env.edit_rows(pid, [2])
    _sync(pid, str(store), mode=SyncMode.incremental, overlap_minutes=0)
    with open_dataset(str(store), pid) as ds:
        base = manifest_segments(ds.load_manifest())[0].tables["data_rows"]
    (store / pid / base.key).unlink()  # lost (a bucket rule, a hand-made delete, ...)

    # Reusing a listed file checks it is there.
    writer = DatasetStore(open_object_store(str(store)), pid).begin()
    with pytest.raises(FileMissingError, match="gone"):
        writer.reuse_file(base)

    lb_env.edit_rows(pid, [3])
    state = sync_project(
        pid, store=str(store), mode=SyncMode.incremental, overlap_minutes=0, return_state=True
    )
    assert state.is_failed()
    assert "run a full sync" in str(state.message) or "run a full sync" in repr(
        state.result(raise_on_failure=False)
    )
    full = _sync(pid, str(store), mode=SyncMode.full)
    assert full["created"]
    with open_dataset(str(store), pid) as ds:
        assert [s.index for s in manifest_segments(ds.load_manifest())] == [0]
        assert len(ds.table("data_rows")) == 6
