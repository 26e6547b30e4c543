"""COCO per frame: a video becomes one image per annotated frame, loadable by pycocotools.

Records are built by hand in the shape video parsing lands (issue 16's contract): a video
row with 3 annotated frames, a box tracked over 2 key frames and 1 interpolated one, and a
mask on 2 of the frames, beside a still image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from labelhaul.coco import (
    frame_image_id_for,
    frame_index,
    frame_index_from_parquet,
    image_id_for,
    instance_id_for,
    video_id_for,
    write_coco,
    write_coco_results,
)
from labelhaul.tables import TableSink, iter_parquet_records

# pycocotools' Cython decode hits numpy 2's __array__ copy deprecation on every call; the
# result is right, and the fix belongs upstream (pycocotools _mask.pyx).
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

W, H = 40, 30
VIDEO, STILL = "cvideo0000000000000000001", "cstill0000000000000000001"
BOX, MASK = "cboxfeature00000000000001", "cmaskfeature0000000000001"


def _data_rows() -> list[dict[str, Any]]:
    return [
        {
            "data_row_id": STILL,
            "global_key": "street.jpg",
            "row_data": "https://cdn.example.com/street.jpg",
            "mime_type": "image/jpeg",
            "width": W,
            "height": H,
        },
        {
            "data_row_id": VIDEO,
            "global_key": "clip.mp4",
            "row_data": "https://cdn.example.com/clip.mp4?Expires=1&Signature=x",
            "mime_type": "video/mp4",
            "width": W,
            "height": H,
            "frame_rate": 10.0,
            "frame_count": 50,
        },
    ]


def _frame_mask(frame: int) -> np.ndarray:
    m = np.zeros((H, W), dtype=np.uint8)
    m[3 + frame : 12 + frame, 5 : 9 + 2 * frame] = 1
    return m


def _ids(drid: str, fid: str, name: str, kind: str) -> dict[str, Any]:
    return {
        "data_row_id": drid,
        "global_key": "clip.mp4" if drid == VIDEO else "street.jpg",
        "label_id": f"lb-{drid}",
        "source": "label",
        "project_id": "cproj",
        "feature_id": fid,
        "feature_schema_id": f"schema-{name}",
        "name": name,
        "value": name,
        "annotation_kind": kind,
        "valid": True,
    }


def _annotations() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    still_box = _ids(STILL, "cstillbox0000000000000001", "car", "ImageBoundingBox")
    still_box.update(bbox_left=1.0, bbox_top=2.0, bbox_width=3.0, bbox_height=4.0)
    out.append(still_box)
    # The box: key frames 5 and 7, frame 6 interpolated, all in segment 0.
    for frame, keyframe in ((5, True), (6, False), (7, True)):
        rec = _ids(VIDEO, BOX, "car", "VideoBoundingBox")
        rec.update(frame=frame, keyframe=keyframe, segment_index=0)
        rec.update(bbox_left=2.0 * frame, bbox_top=3.0, bbox_width=10.0, bbox_height=8.0)
        out.append(rec)
    # The mask on frames 5 and 7 (a key frame each; masks are not interpolated).
    for frame in (5, 7):
        m = _frame_mask(frame)
        rle = mask_utils.encode(np.asfortranarray(m))
        x, y, w, h = (int(v) for v in mask_utils.toBbox(rle))
        rec = _ids(VIDEO, MASK, "road", "VideoSegmentationMask")
        rec.update(frame=frame, keyframe=True, segment_index=0)
        rec.update(
            mask_sha256=f"{frame:064x}",
            mask_x=x,
            mask_y=y,
            mask_w=w,
            mask_h=h,
            mask_area=int(m.sum()),
            mask_rle=rle["counts"].decode(),
            image_width=W,
            image_height=H,
        )
        out.append(rec)
    return out


def _write(path: Path, data_rows: list[dict[str, Any]], anns: list[dict[str, Any]]) -> bytes:
    write_coco(path, data_rows, anns, frames=frame_index(anns), info={"version": "v1"})
    return path.read_bytes()


def test_video_frames_are_images_pycocotools_loads(tmp_path: Path) -> None:
    anns = _annotations()
    summary = write_coco(tmp_path / "i.json", _data_rows(), anns, frames=frame_index(anns))
    coco = COCO(str(tmp_path / "i.json"))

    # The still image as ever, plus one image per annotated frame of the video.
    assert summary.images == len(coco.imgs) == 4
    assert (summary.videos, summary.frame_images) == (1, 3)
    still = coco.imgs[image_id_for(STILL)]
    assert still["file_name"] == "street.jpg" and "video_id" not in still
    frames = {img["frame"]: img for img in coco.imgs.values() if "frame" in img}
    assert sorted(frames) == [5, 6, 7]
    vid = video_id_for(VIDEO)
    for frame, img in frames.items():
        assert img["id"] == frame_image_id_for(VIDEO, frame)
        assert img["file_name"] == f"clip.mp4/{frame}"
        assert (img["width"], img["height"]) == (W, H)
        assert (img["video_id"], img["frame_id"]) == (vid, frame - 1)
        assert "coco_url" not in img  # a frame is not at the video's URL
    (video,) = coco.dataset["videos"]
    assert video["id"] == vid and video["name"] == "clip.mp4"
    assert (video["fps"], video["frame_count"], video["annotated_frames"]) == (10.0, 50, 3)
    assert video["coco_url"] == "https://cdn.example.com/clip.mp4"  # signing removed

    # 1 still box + 3 tracked boxes + 2 masks, each on its own frame's image.
    assert summary.annotations == len(coco.anns) == 6 and summary.skipped == {}
    boxes = {a["frame"]: a for a in coco.anns.values() if a.get("feature_id") == BOX}
    assert sorted(boxes) == [5, 6, 7]
    assert [boxes[f]["keyframe"] for f in (5, 6, 7)] == [True, False, True]
    assert len({a["instance_id"] for a in boxes.values()}) == 1
    for frame, ann in boxes.items():
        assert coco.getAnnIds(imgIds=[frame_image_id_for(VIDEO, frame)]) != []
        assert ann["image_id"] == frame_image_id_for(VIDEO, frame)
        assert ann["bbox"] == [2.0 * frame, 3.0, 10.0, 8.0]
        assert ann["instance_id"] == instance_id_for(BOX) and ann["video_id"] == vid
    masks = [a for a in coco.anns.values() if a.get("feature_id") == MASK]
    assert sorted(a["frame"] for a in masks) == [5, 7]
    for ann in masks:
        decoded = coco.annToMask(ann)
        np.testing.assert_array_equal(decoded, _frame_mask(ann["frame"]))
        assert ann["area"] == int(_frame_mask(ann["frame"]).sum())
    # Every category once, whatever the media.
    assert {c["name"] for c in coco.cats.values()} == {"car", "road"}


def test_frame_ids_are_stable_and_images_deterministic(tmp_path: Path) -> None:
    first = _write(tmp_path / "a.json", _data_rows(), _annotations())
    assert _write(tmp_path / "b.json", _data_rows(), _annotations()) == first
    # The next version (an incremental run: rows arrive in another order, another video
    # added, one frame more annotated): the frames that were there keep their ids.
    more = _annotations()
    extra = _ids(VIDEO, BOX, "car", "VideoBoundingBox")
    extra.update(frame=9, keyframe=True, segment_index=1, bbox_left=1.0, bbox_top=1.0)
    extra.update(bbox_width=2.0, bbox_height=2.0)
    other = dict(_ids("cvideo0000000000000000002", "cbox2", "car", "VideoBoundingBox"))
    other.update(frame=1, keyframe=True, bbox_left=0.0, bbox_top=0.0, bbox_width=1.0)
    other.update(bbox_height=1.0, global_key="other.mp4")
    rows = [
        {**_data_rows()[1], "data_row_id": "cvideo0000000000000000002", "global_key": "b.mp4"},
        *reversed(_data_rows()),
    ]
    _write(tmp_path / "c.json", rows, [other, *reversed(more), extra])
    before = {i["file_name"]: i["id"] for i in COCO(str(tmp_path / "a.json")).imgs.values()}
    after = {i["file_name"]: i["id"] for i in COCO(str(tmp_path / "c.json")).imgs.values()}
    assert before.items() <= after.items()
    assert after["clip.mp4/9"] == frame_image_id_for(VIDEO, 9)
    assert after["b.mp4/1"] == frame_image_id_for("cvideo0000000000000000002", 1)


def test_image_only_coco_is_unchanged_by_frames(tmp_path: Path) -> None:
    rows = _data_rows()[:1]
    anns = [a for a in _annotations() if a["data_row_id"] == STILL]
    write_coco(tmp_path / "old.json", rows, anns)
    write_coco(tmp_path / "new.json", rows, anns, frames=frame_index(anns))
    assert (tmp_path / "new.json").read_bytes() == (tmp_path / "old.json").read_bytes()
    assert b"videos" not in (tmp_path / "new.json").read_bytes()


def test_without_frames_a_video_is_one_image_as_before(tmp_path: Path) -> None:
    """frames=None rebuilds the COCO of versions made before per-frame images, byte for byte."""
    write_coco(tmp_path / "i.json", _data_rows(), _annotations())
    coco = COCO(str(tmp_path / "i.json"))
    assert sorted(coco.imgs) == sorted([image_id_for(STILL), image_id_for(VIDEO)])
    assert "videos" not in coco.dataset


def test_frame_index_follows_the_label_policy_and_reads_parquet(tmp_path: Path) -> None:
    anns = _annotations()
    other_label = {**anns[1], "label_id": "lb-other", "frame": 40}
    chosen = {VIDEO: f"lb-{VIDEO}"}
    assert frame_index([*anns, other_label], chosen) == {VIDEO: [(None, 5), (None, 6), (None, 7)]}
    assert 40 in [f for _, f in frame_index([*anns, other_label])[VIDEO]]
    with TableSink(tmp_path / "t", row_group_size=2) as sink:
        sink.add("data_rows", _data_rows())
        sink.add("annotations", [*anns, other_label])
    paths = sink.close()
    assert frame_index_from_parquet(paths["annotations"], chosen) == frame_index(anns)
    # Streamed from Parquet, as the sync and the reader write it: the same bytes.
    write_coco(
        tmp_path / "p.json",
        iter_parquet_records(paths["data_rows"]),
        iter_parquet_records(paths["annotations"]),
        info={"version": "v1"},
        selected_labels=chosen,
        frames=frame_index_from_parquet(paths["annotations"], chosen),
    )
    assert (tmp_path / "p.json").read_bytes() == _write(tmp_path / "d.json", _data_rows(), anns)


def test_dicom_planes_are_videos_of_their_own(tmp_path: Path) -> None:
    rows = [{**_data_rows()[1], "mime_type": "application/dicom", "global_key": "scan.dcm"}]
    anns = []
    for plane in ("Axial", "Sagittal"):
        rec = _ids(VIDEO, f"cline-{plane}", "vessel", "DICOMBoundingBox")
        rec.update(frame=3, plane=plane, keyframe=True, bbox_left=1.0, bbox_top=1.0)
        rec.update(bbox_width=2.0, bbox_height=2.0)
        anns.append(rec)
    line = _ids(VIDEO, "cpolyline", "vessel", "DICOMPolyline")
    line.update(frame=4, plane="Axial", points=[{"x": 1.0, "y": 1.0}, {"x": 2.0, "y": 3.0}])
    anns.append(line)
    summary = write_coco(tmp_path / "d.json", rows, anns, frames=frame_index(anns))
    coco = COCO(str(tmp_path / "d.json"))
    names = sorted(i["file_name"] for i in coco.imgs.values())
    # Frame 4 holds only a polyline (not COCO geometry): still an annotated frame, no object.
    assert names == ["scan.dcm/Axial/3", "scan.dcm/Axial/4", "scan.dcm/Sagittal/3"]
    assert summary.skipped == {"polyline": 1}
    assert {v["name"] for v in coco.dataset["videos"]} == {"scan.dcm/Axial", "scan.dcm/Sagittal"}
    axial = frame_image_id_for(VIDEO, 3, "Axial")
    assert axial != frame_image_id_for(VIDEO, 3, "Sagittal")
    assert coco.imgs[axial]["video_id"] == video_id_for(VIDEO, "Axial")


def test_a_frame_name_never_repeats_a_still_image_name(tmp_path: Path) -> None:
    rows = [{**_data_rows()[0], "global_key": "clip.mp4/5"}, _data_rows()[1]]
    anns = _annotations()
    summary = write_coco(tmp_path / "i.json", rows, anns, frames=frame_index(anns))
    coco = COCO(str(tmp_path / "i.json"))
    names = [i["file_name"] for i in coco.imgs.values()]
    assert len(set(names)) == len(names) == 4
    assert summary.file_name_collisions == 1
    frame5 = coco.imgs[frame_image_id_for(VIDEO, 5)]
    assert frame5["file_name_collision"] == "clip.mp4/5" and frame5["file_name"] != "clip.mp4/5"


def test_video_predictions_load_as_results_on_frame_images(tmp_path: Path) -> None:
    anns = _annotations()
    preds = []
    for rec in anns:
        if rec.get("frame") is not None:
            preds.append({**rec, "source": "prediction", "confidence": 0.5, "label_id": "p"})
    everything = [*anns, *preds]
    res = write_coco_results(tmp_path / "r.json", everything, iou_type="segm")
    write_coco(
        tmp_path / "gt.json",
        _data_rows(),
        everything,
        res.category_map,
        frames=frame_index(everything),
    )
    gt = COCO(str(tmp_path / "gt.json"))
    dt = gt.loadRes(str(tmp_path / "r.json"))
    assert len(dt.anns) == 2
    assert {a["image_id"] for a in dt.anns.values()} == {
        frame_image_id_for(VIDEO, 5),
        frame_image_id_for(VIDEO, 7),
    }


def test_assemble_writes_per_frame_coco_and_records_it(tmp_path: Path) -> None:
    """The sync's assemble step (parent tables carried over) gives the per-frame COCO."""
    from labelhaul.pipeline import assemble_version

    with TableSink(tmp_path / "parent") as sink:
        sink.add("data_rows", _data_rows())
        sink.add("annotations", _annotations())
    version = assemble_version(
        tmp_path / "staging", [], parent_tables=sink.close(), info={"version": "v1"}
    )
    assert (version.coco_facts["frame_images"], version.coco_facts["videos"]) == (3, 1)
    coco = COCO(str(version.coco))
    assert sorted(i["file_name"] for i in coco.imgs.values()) == [
        "clip.mp4/5",
        "clip.mp4/6",
        "clip.mp4/7",
        "street.jpg",
    ]
    assert version.coco.read_bytes() == _write(tmp_path / "w.json", _data_rows(), _annotations())
