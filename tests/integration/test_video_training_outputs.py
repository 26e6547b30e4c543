"""Video training outputs through the real flow: COCO per frame and masks per frame in pull.

Against `add_synthetic_project(media=["video"])` (the emulator's video rows, issue 16's
contract: annotations rows with `frame`, `keyframe`, `segment_index` and per-frame masks;
data_rows with the video's size, frame rate and count), under Prefect's real engine, on the
local store and moto's S3 server. Expectations come from the landed tables, so the test
holds for any generator that follows the contract: COCO has one image per annotated frame
(pycocotools loads it), its ids survive an incremental sync that changes one video, the
delta's rebuilt COCO equals a full sync's, and every pulled per-frame mask is the table's.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from labelhaul.flows.params import SyncMode
from PIL import Image

from labelhaul.coco import frame_file_name, frame_image_id_for
from labelhaul.emulator import EmulatorServer
from labelhaul.keys import safe_segment
from labelhaul.reader import open_dataset, pull_version
from tests.helpers import sync_project_ok

pytestmark = [
    pytest.mark.usefixtures("prefect_harness"),
    pytest.mark.filterwarnings(
        "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
    ),
]


def _load(path: Path) -> Any:
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def _by_id(coco: dict[str, Any]) -> dict[str, Any]:
    """A COCO file's images and videos by id, its annotations by (feature, frame).

    Annotation ids are positions in the file (1, 2, ...), so they are left out.
    """
    return {
        "images": {i["id"]: i for i in coco["images"]},
        "videos": {v["id"]: v for v in coco.get("videos", [])},
        "annotations": {
            (a["feature_id"], a.get("frame")): {k: v for k, v in a.items() if k != "id"}
            for a in coco["annotations"]
        },
        "categories": coco["categories"],
    }


def _frames_of(ann: Any) -> set[tuple[str, int]]:
    on = ann[ann["frame"].notna()]
    return {(str(d), int(f)) for d, f in zip(on["data_row_id"], on["frame"], strict=True)}


def test_video_project_lands_per_frame_coco_and_pulls_per_frame_masks(
    lb_env: EmulatorServer,
    object_store_uri: str,
    moto_server: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    endpoint = moto_server if object_store_uri.startswith("s3://") else None
    if endpoint:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)
    monkeypatch.setenv("LABELHAUL_COMPACT_FRACTION", "100")  # the incremental lands a delta
    pid = lb_env.add_synthetic_project(
        n_rows=3, instances=2, width=64, height=48, media=["video", "image"]
    )
    first = sync_project_ok(pid, object_store_uri, mode=SyncMode.full)
    assert first["version_id"] == "v000001"
    with open_dataset(object_store_uri, pid, endpoint_url=endpoint) as ds:
        rows = ds.table("data_rows")
        ann = ds.table("annotations")
        gt = _load(ds.coco_path())
        manifest = ds.manifest()
        card = ds.store.objects.get(f"{pid}/versions/v000001/README.md").decode()
        out = tmp_path / "pulled"
        pulled = pull_version(ds, "latest", out)

    videos = rows[rows["mime_type"].str.startswith("video/", na=False)]
    assert len(videos) == 2 and (videos["frame_count"] > 0).all()
    frames = _frames_of(ann)
    assert {d for d, _ in frames} == set(videos["data_row_id"])
    assert (ann[ann["frame"].notna()]["keyframe"] == False).any()  # noqa: E712 interpolated

    # One COCO image per annotated frame, named <global key>/<frame>, with its stable id.
    frame_images = {i["id"]: i for i in gt.dataset["images"] if "frame" in i}
    assert len(frame_images) == len(frames) == manifest["coco"]["frame_images"]
    keys = dict(zip(rows["data_row_id"], rows["global_key"], strict=True))
    for drid, frame in frames:
        img = frame_images[frame_image_id_for(drid, frame)]
        assert img["file_name"] == frame_file_name(keys[drid], frame)
        assert img["frame_id"] == frame - 1 and img["video_id"]
    assert {v["data_row_id"] for v in gt.dataset["videos"]} == set(videos["data_row_id"])
    assert manifest["coco"]["videos"] == 2
    still = rows[~rows["data_row_id"].isin(videos["data_row_id"])]
    assert {i["data_row_id"] for i in gt.dataset["images"] if "frame" not in i} == set(
        still["data_row_id"]
    )
    video_anns = [a for a in gt.dataset["annotations"] if "frame" in a]
    assert video_anns and all(a["image_id"] in frame_images for a in video_anns)
    assert "one per annotated frame" in card

    # pull: a mask file per feature per frame, each the table's mask.
    folders = json.loads((out / "mask_folders.json").read_text())
    video_masks = ann[ann["frame"].notna() & ann["mask_sha256"].notna()]
    assert len(video_masks) > 0 and pulled["masks"] == int(ann["mask_sha256"].notna().sum())
    with open_dataset(object_store_uri, pid, endpoint_url=endpoint) as ds:
        for _, row in video_masks.iterrows():
            rel = f"{folders[row['data_row_id']]}/{int(row['frame'])}"
            path = out / "masks" / rel / f"{safe_segment(row['feature_id'])}.png"
            with Image.open(path) as img:
                np.testing.assert_array_equal(np.asarray(img), ds.mask(row))
            mask_ann = [
                a
                for a in video_anns
                if a["feature_id"] == row["feature_id"] and a["frame"] == int(row["frame"])
            ]
            assert len(mask_ann) == 1
            np.testing.assert_array_equal(gt.annToMask(mask_ann[0]) * 255, ds.mask(row))

    # Incremental: one video relabelled (the generator changes its frames): a delta whose
    # rebuilt COCO equals a full sync's, and the other video's frame images keep their ids.
    video_rows = [i for i in range(3) if lb_env.synthetic_spec(pid).media_of(i) == "video"]
    lb_env.edit_rows(pid, [video_rows[0]])
    second = sync_project_ok(pid, object_store_uri, mode=SyncMode.incremental, overlap_minutes=0)
    assert second["created"] and second["rows_exported"] == 1
    ref = str(tmp_path / "ref")
    sync_project_ok(pid, ref, mode=SyncMode.full)
    with (
        open_dataset(object_store_uri, pid, endpoint_url=endpoint) as ds,
        open_dataset(ref, pid) as full,
    ):
        assert [d["name"] for d in ds.manifest()["derived_files"]] == ["instances"]
        rebuilt = ds.coco_path().read_bytes()
        # The same images, videos and annotations as a full sync's, in any order: a delta's
        # tables list the changed rows after the kept ones, a full export in export order
        # (COCO ids, not positions, join images to annotations; test_segments_flow.py
        # compares image-only deltas the same way).
        assert _by_id(json.loads(rebuilt)) == _by_id(json.loads(full.coco_path().read_bytes()))
        ann2 = ds.table("annotations")
    edited = lb_env.synthetic_spec(pid).data_row_id(video_rows[0])
    assert _frames_of(ann2) != frames or not ann2.equals(ann)  # the edit changed something
    kept = {(d, f) for d, f in frames if d != edited}
    after = {i["id"] for i in json.loads(rebuilt)["images"]}
    assert {frame_image_id_for(d, f) for d, f in kept} <= after
