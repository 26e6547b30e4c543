"""Video and DICOM projects through the real sync flow: emulator, Prefect, local and S3 stores.

The SDK exports the emulator's video and DICOM rows over HTTP; per-frame composites are
fetched and split; every landed mask is compared pixel for pixel with the emulator's ground
truth for its frame.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import numpy as np
import pytest

from labelhaul.emulator import EmulatorServer
from labelhaul.emulator.synthetic import ground_truth_masks
from labelhaul.reader import open_dataset
from tests.helpers import sync_project_ok as _sync

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture
def store(
    object_store_uri: str, moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, dict[str, Any]]:
    """The store URI (local directory, then moto's S3 server) and how to open it."""
    if object_store_uri.startswith("s3://"):
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server)
        return object_store_uri, {"endpoint_url": moto_server}
    return object_store_uri, {}


def _open(store: tuple[str, dict[str, Any]], pid: str) -> AbstractContextManager[Any]:
    return open_dataset(store[0], pid, **store[1])


def test_video_and_dicom_round_trip_with_pixel_exact_masks_per_frame(
    lb_env: EmulatorServer, store: tuple[str, dict[str, Any]]
) -> None:
    pid = lb_env.add_synthetic_project(n_rows=4, instances=2, media=["video", "dicom"])
    spec = lb_env.synthetic_spec(pid)
    result = _sync(pid, store[0])
    assert result["status"] == "completed" and result["created"]
    assert result["errors_by_kind"] == {}
    with _open(store, pid) as ds:
        ann = ds.table("annotations")
        rows = ds.table("data_rows")
        video_rows = rows[rows["mime_type"] == "video/mp4"]
        assert sorted(video_rows["frame_count"]) == [8, 8]
        assert set(video_rows["frame_rate"]) == {10.0}
        # Every annotation of a video or DICOM row has its frame.
        assert ann["frame"].notna().all()
        masks = ann[ann["annotation_kind"] == "VideoSegmentationMask"]
        # 2 video rows x 2 instances x 3 frames, each its own blob.
        assert len(masks) == 12 and masks["mask_sha256"].notna().all()
        assert masks["mask_sha256"].nunique() == 12
        for _, row in masks.iterrows():
            parsed = spec.parse_id(row["feature_id"])
            assert parsed is not None
            truth = ground_truth_masks(spec, parsed[1], frame=int(row["frame"]))
            got = ds.mask(row) > 0
            assert np.array_equal(got, truth[row["feature_id"]]), (row["feature_id"], row["frame"])
        boxes = ann[ann["annotation_kind"] == "VideoBoundingBox"]
        assert len(boxes) == 2 * 7
        assert sorted(boxes[boxes["keyframe"] == False]["frame"].unique()) == [2, 3, 7]  # noqa: E712
        dicom = ann[ann["annotation_kind"] == "DICOMPolyline"]
        assert sorted(dicom["plane"].unique()) == ["Axial", "Sagittal"]
        assert len(dicom) == 2 * 4
        cls = ds.table("classifications")
        frame_cls = cls[cls["scope"] == "frame"]
        assert len(frame_cls) == 2 * (2 + 2)  # radio: 2 ranges; checklist: 2 answers, 1 range
        assert frame_cls["frame_start"].notna().all() and frame_cls["frame_end"].notna().all()


def test_incremental_sync_lands_one_changed_frame_of_one_video(
    lb_env: EmulatorServer, tmp_path: Any
) -> None:
    from labelhaul.flows.params import SyncMode

    store = str(tmp_path / "store")
    pid = lb_env.add_synthetic_project(n_rows=3, instances=1, media=["video"])
    spec = lb_env.synthetic_spec(pid)
    first = _sync(pid, store)
    with open_dataset(store, pid) as ds:
        before = ds.table("annotations")
    lb_env.edit_rows(pid, [2])
    second = _sync(pid, store, mode=SyncMode.incremental, overlap_minutes=0)
    assert second["created"] and second["rows_exported"] == 1
    assert first["version_id"] != second["version_id"]
    with open_dataset(store, pid) as ds:
        after = ds.table("annotations")
    key = ["data_row_id", "feature_id", "frame"]
    # A composite URL names the export task that served it: it changes on every export.
    cols = [c for c in before.columns if c != "composite_url"]
    merged = before[cols].merge(after[cols], on=key, suffixes=("_a", "_b"))
    assert len(merged) == len(before) == len(after)
    changed = merged[merged["bbox_left_a"].fillna(-1) != merged["bbox_left_b"].fillna(-1)]
    assert len(changed) == 1
    (hit,) = changed.to_dict("records")
    assert hit["data_row_id"] == spec.data_row_id(2)
    assert hit["feature_id"] == spec.id("ob", 2, 0) and hit["frame"] == 1
    assert hit["bbox_left_b"] == hit["bbox_left_a"] + 1
    # Every other column of every other row is unchanged.
    other = [c[:-2] for c in merged.columns if c.endswith("_a") and c != "bbox_left_a"]
    rest = merged.drop(changed.index)
    for c in other:
        # As text: list-valued columns (points, mask_color) and nulls compare too.
        assert [str(x) for x in rest[f"{c}_a"]] == [str(x) for x in rest[f"{c}_b"]], c


def test_verify_repair_brings_back_every_frame_of_a_video_mask(
    lb_env: EmulatorServer, tmp_path: Any
) -> None:
    """Each frame's composite is its own repair job: every frame's blob comes back."""
    import subprocess
    import sys
    from pathlib import Path

    store = str(tmp_path / "store")
    pid = lb_env.add_synthetic_project(n_rows=1, instances=2, media=["video"])
    _sync(pid, store)
    with open_dataset(store, pid) as ds:
        ann = ds.table("annotations")
        shas = sorted(ann["mask_sha256"].dropna().unique())
    assert len(shas) == 2 * 3  # 2 instances x 3 frames
    for sha in shas:
        (Path(store) / pid / "blobs" / "sha256" / sha[:2] / f"{sha}.png").unlink()
    cmd = [sys.executable, "-m", "labelhaul", "verify", store, "--dataset", pid, "--repair"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    for sha in shas:
        assert f"repaired blob {sha}" in done.stdout
        assert (Path(store) / pid / "blobs" / "sha256" / sha[:2] / f"{sha}.png").is_file()
