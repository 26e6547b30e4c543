"""DICOM segmentation masks through the real sync flow: emulator, Prefect, local and S3 stores.

The SDK exports the emulator's DICOM rows over HTTP; each plane's composites are served per
slice (`.../masks/<plane's composite>/index/<slice>`), fetched and split; every landed mask is
compared pixel for pixel with the emulator's ground truth for its plane and slice, and
`pull` writes one file per feature per plane per slice (`masks/<folder>/<plane>/<slice>/`).
One feature is segmented on slice 1 of both Axial and Sagittal: the two must stay two masks.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from labelhaul.emulator import EmulatorServer
from labelhaul.emulator.media import dicom
from labelhaul.emulator.synthetic import ground_truth_masks
from labelhaul.keys import safe_segment
from labelhaul.reader import open_dataset, pull_version
from tests.helpers import sync_project_ok

pytestmark = [
    pytest.mark.usefixtures("prefect_harness"),
    pytest.mark.filterwarnings(
        "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
    ),
]


def test_dicom_masks_land_per_plane_and_slice_pixel_exact_and_pull_per_plane(
    lb_env: EmulatorServer,
    object_store_uri: str,
    moto_server: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    endpoint = moto_server if object_store_uri.startswith("s3://") else None
    if endpoint:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)
    pid = lb_env.add_synthetic_project(n_rows=2, instances=2, media=["dicom"])
    spec = lb_env.synthetic_spec(pid)
    result = sync_project_ok(pid, object_store_uri)
    assert result["status"] == "completed" and result["created"]
    assert result["errors_by_kind"] == {}
    out = tmp_path / "pulled"
    with open_dataset(object_store_uri, pid, endpoint_url=endpoint) as ds:
        ann = ds.table("annotations")
        masks = ann[ann["annotation_kind"] == "DICOMSegmentationMask"]
        # 2 rows x 2 planes x 2 slices x 2 instances, each its own blob.
        assert len(masks) == 16 and masks["mask_sha256"].notna().all()
        assert masks["mask_sha256"].nunique() == 16
        assert set(masks["plane"]) == set(dicom.MASK_PLANES)
        for _, row in masks.iterrows():
            parsed = spec.parse_id(row["feature_id"])
            assert parsed is not None
            truth = ground_truth_masks(spec, parsed[1], int(row["frame"]), row["plane"])
            got = ds.mask(row) > 0
            assert np.array_equal(got, truth[row["feature_id"]]), (
                row["feature_id"],
                row["plane"],
                row["frame"],
            )
        # The reader asks which plane when a feature has masks on several.
        fid = spec.mask_feature_id(0, 0)
        with pytest.raises(Exception, match="plane="):
            ds.mask(fid)
        axial = ds.mask(fid, frame=1, plane="Axial") > 0
        sagittal = ds.mask(fid, frame=1, plane="Sagittal") > 0
        assert np.array_equal(axial, ground_truth_masks(spec, 0, 1, "Axial")[fid])
        assert np.array_equal(sagittal, ground_truth_masks(spec, 0, 1, "Sagittal")[fid])
        assert not np.array_equal(axial, sagittal)
        pulled = pull_version(ds, "latest", out)

    assert pulled["masks"] == 16
    folders = json.loads((out / "mask_folders.json").read_text())
    for _, row in masks.iterrows():
        rel = f"{folders[row['data_row_id']]}/{row['plane']}/{int(row['frame'])}"
        path = out / "masks" / rel / f"{safe_segment(row['feature_id'])}.png"
        parsed = spec.parse_id(row["feature_id"])
        assert parsed is not None
        truth = ground_truth_masks(spec, parsed[1], int(row["frame"]), row["plane"])
        with Image.open(path) as img:
            np.testing.assert_array_equal(np.asarray(img) > 0, truth[row["feature_id"]])
    # COCO: each plane's slice is its own image; each mask annotation decodes to its truth.
    gt = COCO(str(out / "coco" / "instances.json"))
    mask_ids = set(masks["feature_id"])
    mask_anns = [a for a in gt.dataset["annotations"] if a.get("feature_id") in mask_ids]
    assert len(mask_anns) == 16
    images = {i["id"]: i for i in gt.dataset["images"]}
    for a in mask_anns:
        parsed = spec.parse_id(a["feature_id"])
        assert parsed is not None
        plane = images[a["image_id"]]["plane"]
        truth = ground_truth_masks(spec, parsed[1], int(a["frame"]), plane)[a["feature_id"]]
        np.testing.assert_array_equal(gt.annToMask(a) > 0, truth)


def test_verify_repair_brings_back_each_plane_of_a_dicom_mask(
    lb_env: EmulatorServer, tmp_path: Path
) -> None:
    """Each plane's slice is its own repair job: a feature's Axial and Sagittal blobs (the
    same feature id, the same slice number) both come back."""
    import subprocess
    import sys

    store = str(tmp_path / "store")
    pid = lb_env.add_synthetic_project(n_rows=1, instances=1, media=["dicom"])
    sync_project_ok(pid, store)
    with open_dataset(store, pid) as ds:
        ann = ds.table("annotations")
    masks = ann[ann["annotation_kind"] == "DICOMSegmentationMask"]
    shas = sorted(masks["mask_sha256"].unique())
    assert len(shas) == 2 * 2  # 2 planes x 2 slices of one feature
    for sha in shas:
        (Path(store) / pid / "blobs" / "sha256" / sha[:2] / f"{sha}.png").unlink()
    cmd = [sys.executable, "-m", "labelhaul", "verify", store, "--dataset", pid, "--repair"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    for sha in shas:
        assert f"repaired blob {sha}" in done.stdout
    spec = lb_env.synthetic_spec(pid)
    with open_dataset(store, pid) as ds:
        for _, row in masks.iterrows():
            truth = ground_truth_masks(spec, 0, int(row["frame"]), row["plane"])
            assert np.array_equal(ds.mask(row) > 0, truth[row["feature_id"]])
