"""The sync flows under Prefect's real engine, against the emulator and the S3 server."""

from __future__ import annotations

import gzip
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from labelhaul.emulator import EmulatorServer
from labelhaul.reader import open_dataset
from tests.helpers import sync_project_ok as _sync

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _store_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_seed_project_lands_a_readable_version(lb_env: EmulatorServer, tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    pid = lb_env.seed_project_id
    result = _sync(pid, store)

    assert result["status"] == "completed"
    assert result["created"] and result["version_id"] == "v000001"
    with open_dataset(store, pid) as ds:
        assert ds.versions() == ["v000001"]
        manifest = ds.manifest()
        assert manifest["watermark"]["value"] == "2024-04-08T16:34:01.000Z"
        rows = ds.table("data_rows")
        assert list(rows["data_row_id"]) == ["clf9spzxq029m071nehy60a6v"]
        ann = ds.table("annotations")
        masks = ann[ann["annotation_kind"] == "ImageSegmentationMask"]
        assert len(masks) == 5
        assert masks["mask_sha256"].notna().all()
        # Every landed mask equals the instance mask Labelbox serves for that feature.
        for _, row in masks.iterrows():
            png = requests.get(
                row["mask_url"],
                headers={"Authorization": f"Bearer {lb_env.api_key}"},
                timeout=30,
            )
            png.raise_for_status()
            from io import BytesIO

            from PIL import Image

            truth = np.array(Image.open(BytesIO(png.content)).convert("L")) > 0
            assert np.array_equal(ds.mask(row) > 0, truth), row["feature_id"]
        record = json.loads(Path(result["run_record"]).read_text())
        assert record["status"] == "completed"
        assert record["flow_run_id"]
        assert record["version_id"] == "v000001"


def test_second_sync_without_changes_makes_no_new_version(
    lb_env: EmulatorServer, s3_store_uri: str, moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server)
    pid = lb_env.add_synthetic_project(n_rows=6, instances=3)
    first = _sync(pid, s3_store_uri)
    second = _sync(pid, s3_store_uri)
    assert first["created"] and first["version_id"] == "v000001"
    assert not second["created"]
    assert second["current_version_id"] == "v000001"
    with open_dataset(s3_store_uri, pid, endpoint_url=moto_server) as ds:
        assert ds.versions() == ["v000001"]
        assert len(ds.table("data_rows")) == 6


def test_model_run_lands_labels_and_predictions(lb_env: EmulatorServer, tmp_path: Path) -> None:
    from labelhaul.flows.sync_model_run import sync_model_run

    store = str(tmp_path / "store")
    state = sync_model_run(lb_env.seed_model_run_id, store=store, return_state=True)
    assert state.is_completed(), state.message
    with open_dataset(store, lb_env.seed_model_run_id) as ds:
        ann = ds.table("annotations")
        assert set(ann["source"]) == {"label", "prediction"}
        assert ann["mask_sha256"][ann["annotation_kind"] == "ImageSegmentationMask"].notna().all()
        names = {(f["role"], f["name"]) for f in ds.manifest()["files"]}
        assert ("coco", "instances") in names
        assert ("coco", "results_bbox") in names and ("coco", "results_segm") in names


def test_faults_on_every_request_class_land_the_same_content(
    lb_env: EmulatorServer, tmp_path: Path
) -> None:
    pid = lb_env.add_synthetic_project(n_rows=12, instances=4)
    clean = _sync(pid, str(tmp_path / "clean"))
    for request_class in ("chunk", "mask"):
        lb_env.faults.set(request_class, "5xx", rate=0.25)
        lb_env.faults.set(request_class, "reset", rate=0.1)
    lb_env.faults.set("mask", "truncate", next_n=2)
    lb_env.faults.set("mask", "429", next_n=2, retry_after=0)
    lb_env.faults.set("graphql", "5xx", next_n=1)
    faulty = _sync(pid, str(tmp_path / "faulty"))
    with (
        open_dataset(str(tmp_path / "clean"), pid) as a,
        open_dataset(str(tmp_path / "faulty"), pid) as b,
    ):
        assert a.manifest()["content_digest"] == b.manifest()["content_digest"]
        assert a.manifest()["counts"] == b.manifest()["counts"]
    assert clean["errors_by_kind"] == faulty["errors_by_kind"] == {}


def test_api_key_never_lands_in_the_store_or_the_logs(
    lb_env: EmulatorServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = tmp_path / "store"
    with caplog.at_level("DEBUG"):
        result = _sync(lb_env.seed_project_id, str(store))
    key = lb_env.api_key.encode()
    for path in _store_files(store):
        data = path.read_bytes()
        if path.suffix == ".gz":
            data = gzip.decompress(data)
        assert key not in data, path
    assert lb_env.api_key not in caplog.text
    assert lb_env.api_key not in json.dumps(result, default=str)


def test_bad_filter_fails_fast_with_the_fix(lb_env: EmulatorServer, tmp_path: Path) -> None:
    from labelhaul.flows.params import SyncMode
    from labelhaul.flows.sync_project import sync_project

    state = sync_project(
        lb_env.seed_project_id,
        store=str(tmp_path / "store"),
        mode=SyncMode.full,
        data_row_ids=["a"],
        global_keys=["b"],
        return_state=True,
    )
    assert state.is_failed()
    assert "not both" in str(state.message) or "not both" in repr(
        state.result(raise_on_failure=False)
    )
    assert not (tmp_path / "store" / lb_env.seed_project_id / "_latest.json").exists()


def test_unknown_project_fails_naming_the_fix(lb_env: EmulatorServer, tmp_path: Path) -> None:
    from labelhaul.flows.sync_project import sync_project

    state = sync_project("cnosuchproject000000000000", store=str(tmp_path), return_state=True)
    assert state.is_failed()
    exc = state.result(raise_on_failure=False)
    assert "not found" in str(exc)


def test_overlapping_syncs_of_one_project_do_not_interleave(
    lb_env: EmulatorServer, tmp_path: Path
) -> None:
    pid = lb_env.add_synthetic_project(n_rows=4, instances=2)
    lb_env.task_seconds = 1.0  # keep each sync inside its slot for a while
    store = str(tmp_path / "store")
    results: list[dict[str, Any]] = []

    def run() -> None:
        results.append(_sync(pid, store))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert len(results) == 2
    a, b = sorted(results, key=lambda r: r["lock_acquired_at"])
    assert a["lock_released_at"] <= b["lock_acquired_at"]
    assert sorted(r["created"] for r in results) == [False, True]


def _blob_names(store: Path) -> set[str]:
    return {p.name for p in store.rglob("blobs/**/*.png")}


def test_incremental_after_full_equals_a_full_sync_of_the_final_state(
    lb_env: EmulatorServer, tmp_path: Path
) -> None:
    from labelhaul.flows.params import SyncMode

    pid = lb_env.add_synthetic_project(n_rows=10, instances=3)
    store = tmp_path / "store"
    first = _sync(pid, str(store), mode=SyncMode.full)
    blobs_before = _blob_names(store)

    lb_env.edit_rows(pid, [4])
    lb_env.request_log.clear()
    second = _sync(pid, str(store), mode=SyncMode.incremental, overlap_minutes=0)
    assert second["mode"] == "incremental" and second["created"]
    assert second["rows_exported"] == 1  # only the relabelled data row
    spec = lb_env.synthetic_spec(pid)
    composites = {e.path for e in lb_env.request_log if "/masks/" in e.path}
    # Only that label's composite was downloaded again.
    assert len(composites) == 1 and spec.composite_id(4) in composites.pop()

    # Every unchanged mask blob is reused; only the relabelled row's masks are new.
    blobs_after = _blob_names(store)
    assert blobs_before <= blobs_after
    assert len(blobs_after - blobs_before) == 3

    full = _sync(pid, str(tmp_path / "full"), mode=SyncMode.full)
    with open_dataset(str(store), pid) as inc, open_dataset(str(tmp_path / "full"), pid) as ref:
        assert inc.versions() == ["v000001", "v000002"]
        assert inc.manifest()["content_digest"] == ref.manifest()["content_digest"]
        assert inc.manifest()["watermark"] == ref.manifest()["watermark"]
        assert inc.manifest()["parent_version_id"] == first["version_id"]
    assert full["created"]


def test_only_a_full_sync_sees_deletions(lb_env: EmulatorServer, tmp_path: Path) -> None:
    from labelhaul.flows.params import SyncMode

    pid = lb_env.add_synthetic_project(n_rows=5, instances=2)
    store = str(tmp_path / "store")
    _sync(pid, store, mode=SyncMode.full)
    lb_env.delete_rows(pid, [1])
    inc = _sync(pid, store, mode=SyncMode.incremental)
    assert not inc["created"]  # nothing changed that an incremental export can see
    full = _sync(pid, store, mode=SyncMode.full)
    assert full["created"]
    with open_dataset(store, pid) as ds:
        ids = set(ds.table("data_rows")["data_row_id"])
        assert lb_env.synthetic_spec(pid).data_row_id(1) not in ids
        assert len(ids) == 4


def test_distinct_mask_project_lands_every_mask_as_its_own_exact_blob(
    lb_env: EmulatorServer, tmp_path: Path
) -> None:
    from labelhaul.emulator import ground_truth_masks

    pid = lb_env.add_synthetic_project(n_rows=8, instances=2, distinct_masks=True)
    store = str(tmp_path / "store")
    _sync(pid, store)
    spec = lb_env.synthetic_spec(pid)
    truth: dict[str, np.ndarray] = {}
    for row in range(8):
        truth.update(ground_truth_masks(spec, row))
    with open_dataset(store, pid) as ds:
        ann = ds.table("annotations")
        masks = ann[ann["mask_sha256"].notna()]
        assert len(masks) == 16 and masks["mask_sha256"].nunique() == 16
        for _, row in masks.iterrows():
            assert np.array_equal(ds.mask(row) > 0, truth[row["feature_id"]]), row["feature_id"]


def test_mask_stage_in_a_process_pool_lands_the_same_dataset(
    lb_env: EmulatorServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pid = lb_env.add_synthetic_project(n_rows=9, instances=3)
    threads = _sync(pid, str(tmp_path / "threads"))
    monkeypatch.setenv("LABELHAUL_MASK_PROCESSES", "true")
    monkeypatch.setenv("LABELHAUL_MASK_BATCH_SIZE", "3")  # 3 parts over 2 processes
    procs = _sync(pid, str(tmp_path / "procs"))
    assert threads["mask_runner"] == "threads" and procs["mask_runner"] == "processes"
    # Issue 17: the pool's workers, idle once the masks are split, digested the tables.
    assert threads["tables_digested_in_pool"] == 0
    assert procs["tables_digested_in_pool"] >= 3  # data rows, labels, annotations, ...
    # ... and split each part as staging closed it, while the rest of the export streamed.
    assert "mask_parts_split_early" not in threads
    assert procs["mask_parts_split_early"] == 3 and procs["mask_parts_split_again"] == 0
    with (
        open_dataset(str(tmp_path / "threads"), pid) as a,
        open_dataset(str(tmp_path / "procs"), pid) as b,
    ):
        assert a.manifest()["content_digest"] == b.manifest()["content_digest"]
        assert b.manifest()["masks"] == {"instances": 27, "errors": 0}
