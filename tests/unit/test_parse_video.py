"""Video and DICOM labels: one row per object per frame, frame ranges, per-frame mask jobs.

Rows come from the emulator's generators (`labelhaul.emulator.media.video` / `.dicom`) and from
the shapes of Labelbox's own export tests; nothing here talks to a server.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson

from labelhaul.emulator.exports import ExportParams, shape_row
from labelhaul.emulator.media import video
from labelhaul.emulator.synthetic import SyntheticSpec, build_row
from labelhaul.masktypes import MaskResult
from labelhaul.rows import ParsedRow, parse_data_row
from labelhaul.tables import apply_mask_results


def _spec(media: str, instances: int = 2) -> SyntheticSpec:
    return SyntheticSpec.make(
        n_rows=2, instances=instances, seed=3, width=48, height=40, media=[media]
    )


def _parse(row: dict[str, Any], spec: SyntheticSpec) -> ParsedRow:
    return parse_data_row(row, 0, source_id=spec.project_id)


def _frames_of(parsed: ParsedRow, fid: str) -> dict[int, dict[str, Any]]:
    return {r["frame"]: r for r in parsed.tables["annotations"] if r["feature_id"] == fid}


def test_video_objects_land_per_frame_with_keyframes_and_segments() -> None:
    spec = _spec("video")
    parsed = _parse(build_row(spec, 0), spec)
    assert parsed.errors == []
    box = _frames_of(parsed, spec.id("ob", 0, 0))
    assert sorted(box) == [1, 2, 3, 4, 6, 7, 8]
    assert {f: r["keyframe"] for f, r in box.items()} == {
        1: True, 2: False, 3: False, 4: True, 6: True, 7: False, 8: True
    }  # fmt: skip
    assert {f: r["segment_index"] for f, r in box.items()} == {
        1: 0, 2: 0, 3: 0, 4: 0, 6: 1, 7: 1, 8: 1
    }  # fmt: skip
    first = box[1]
    assert first["annotation_kind"] == "VideoBoundingBox" and first["valid"] is True
    assert first["bbox_width"] is not None and first["plane"] is None
    point = _frames_of(parsed, spec.id("ob", 0, 1))
    assert sorted(point) == [2, 3] and point[2]["point_x"] is not None
    line = _frames_of(parsed, spec.id("ob", 0, 2))
    assert sorted(line) == [5] and len(line[5]["points"]) >= 2
    (data_row,) = parsed.tables["data_rows"]
    assert (data_row["frame_rate"], data_row["frame_count"]) == (10.0, 8)
    assert data_row["mime_type"] == "video/mp4"


def test_video_masks_give_one_job_per_frame_and_rows_per_instance_per_frame() -> None:
    spec = _spec("video", instances=3)
    parsed = _parse(build_row(spec, 1), spec)
    jobs = sorted(parsed.mask_jobs, key=lambda j: j.frame or 0)
    assert [j.frame for j in jobs] == [1, 2, 3]
    for job in jobs:
        assert job.composite_url is not None
        assert job.composite_url.endswith(f"/index/{job.frame}")
        assert [i.feature_id for i in job.instances] == [
            spec.mask_feature_id(1, j) for j in range(3)
        ]
    masks = [
        r for r in parsed.tables["annotations"] if r["annotation_kind"] == "VideoSegmentationMask"
    ]
    assert sorted((r["feature_id"], r["frame"]) for r in masks) == sorted(
        (spec.mask_feature_id(1, j), f) for j in range(3) for f in (1, 2, 3)
    )


def test_frame_classifications_are_one_row_per_range_and_nested_answers_per_frame() -> None:
    spec = _spec("video")
    parsed = _parse(build_row(spec, 0), spec)
    cls = parsed.tables["classifications"]
    radio = [r for r in cls if r["question_feature_id"] == spec.id("cl", 0, 20)]
    assert sorted((r["frame_start"], r["frame_end"]) for r in radio) == [(1, 3), (6, 6)]
    assert {r["scope"] for r in radio} == {"frame"}
    checklist = [r for r in cls if r["question_feature_id"] == spec.id("cl", 0, 21)]
    assert [(r["frame_start"], r["frame_end"]) for r in checklist] == [(4, 5), (4, 5)]
    nested = [r for r in cls if r["object_feature_id"] == spec.id("ob", 0, 0)]
    assert sorted(r["frame_start"] for r in nested) == [1, 2, 3, 4]
    assert all(r["frame_start"] == r["frame_end"] for r in nested)
    # The global classifications stay as images have them.
    glob = [r for r in cls if r["scope"] == "global"]
    assert glob and all(r["frame_start"] is None for r in glob)


def test_dicom_polylines_land_per_plane_and_frame() -> None:
    spec = _spec("dicom")
    parsed = _parse(build_row(spec, 0), spec)
    assert parsed.errors == []
    axial = _frames_of(parsed, spec.id("ob", 0, 0))
    assert sorted(axial) == [1, 2, 3]
    assert {f: r["keyframe"] for f, r in axial.items()} == {1: True, 2: False, 3: True}
    assert {r["plane"] for r in axial.values()} == {"Axial"}
    assert {r["annotation_kind"] for r in axial.values()} == {"DICOMPolyline"}
    sagittal = _frames_of(parsed, spec.id("ob", 0, 1))
    assert sorted(sagittal) == [4] and sagittal[4]["plane"] == "Sagittal"
    assert sagittal[4]["segment_index"] == 0


def test_dicom_with_segments_and_key_frames_inside_each_group_lands_the_same() -> None:
    """The other documented arrangement: `segments` and the key frame map per group."""
    spec = _spec("dicom")
    row = build_row(spec, 0)
    ann = row["projects"][spec.project_id]["labels"][0]["annotations"]
    for plane, group in ann["groups"].items():
        group["segments"] = ann["segments"][plane]
        group["key_frame_feature_map"] = {
            fid: planes[plane] for fid, planes in ann["key_frame_feature_map"].items()
        }
    del ann["segments"], ann["key_frame_feature_map"]
    nested = _parse(row, spec)
    flat = _parse(build_row(spec, 0), spec)
    assert nested.errors == []
    # 4 polyline rows; 2 masks x 2 planes x 2 slices (emulator.media.dicom).
    assert len(flat.tables["annotations"]) == 4 + 2 * 2 * 2
    assert nested.tables["annotations"] == flat.tables["annotations"]
    assert sorted((j.plane, j.frame) for j in nested.mask_jobs) == sorted(
        (j.plane, j.frame) for j in flat.mask_jobs
    )


def test_export_without_interpolated_frames_has_key_frames_only() -> None:
    spec = _spec("video")
    params = ExportParams(interpolated_frames=False)
    row = shape_row(build_row(spec, 0), params, "project", "http://emu")
    parsed = _parse(row, spec)
    box = _frames_of(parsed, spec.id("ob", 0, 0))
    assert sorted(box) == [1, 4, 6, 8] and all(r["keyframe"] for r in box.values())
    with_interp = shape_row(
        build_row(spec, 0), ExportParams(interpolated_frames=True), "project", "http://emu"
    )
    assert sorted(_frames_of(_parse(with_interp, spec), spec.id("ob", 0, 0))) == [
        1, 2, 3, 4, 6, 7, 8
    ]  # fmt: skip
    dicom = _spec("dicom")
    drow = shape_row(build_row(dicom, 0), params, "project", "http://emu")
    assert sorted(_frames_of(_parse(drow, dicom), dicom.id("ob", 0, 0))) == [1, 3]


def test_mask_urls_of_frames_point_at_the_emulator() -> None:
    spec = _spec("video")
    row = shape_row(build_row(spec, 0), ExportParams(), "project", "http://emu:1", task_id="t1")
    parsed = _parse(row, spec)
    assert len(parsed.mask_jobs) == video.MASK_FRAMES
    for job in parsed.mask_jobs:
        assert job.composite_url is not None
        assert job.composite_url.startswith("http://emu:1/api/v1/tasks/t1/masks/")


def test_the_sdk_test_export_of_a_video_box_lands() -> None:
    """labelhaul-python's `test_export_v2_video`: a box on frames 13, 18, 19."""
    box = {
        "feature_id": "clgjnpyse000ui3zx6fr1d880",
        "name": "bbox",
        "annotation_kind": "VideoBoundingBox",
        "classifications": [],
        "bounding_box": {"top": 98.0, "left": 146.0, "height": 243.0, "width": 236.0},
    }
    ann = {
        "frames": {
            str(f): {"objects": {box["feature_id"]: copy.deepcopy(box)}, "classifications": []}
            for f in (13, 18, 19)
        },
        "segments": {box["feature_id"]: [[13, 13], [18, 19]]},
        "key_frame_feature_map": {box["feature_id"]: {"13": True, "18": False, "19": True}},
        "classifications": [],
    }
    row = {
        "data_row": {"id": "cdr"},
        "media_attributes": {"frame_rate": 10, "frame_count": 100, "mime_type": "video/mp4"},
        "projects": {"cp": {"labels": [{"id": "clb", "annotations": ann}]}},
    }
    parsed = parse_data_row(row, 0)
    rows = {r["frame"]: r for r in parsed.tables["annotations"]}
    assert {f: (r["keyframe"], r["segment_index"]) for f, r in rows.items()} == {
        13: (True, 0),
        18: (False, 1),
        19: (True, 1),
    }
    assert rows[13]["bbox_left"] == 146.0


def test_what_is_not_landed_is_an_error_record_with_its_path_and_raw_json() -> None:
    spec = _spec("video")
    row = build_row(spec, 0)
    ann = row["projects"][spec.project_id]["labels"][0]["annotations"]
    ann["frames"]["2"]["hotspots"] = [{"x": 1}]
    ann["frames"]["x9"] = {"objects": {}}
    ann["segments"]["cghost"] = [[1, 2]]
    ann["frames"]["5"]["objects"]["cnew"] = {"feature_id": "cnew", "annotation_kind": "VideoCuboid"}
    parsed = _parse(row, spec)
    by_kind = {e.kind: e for e in parsed.errors}
    # Paths are JSON paths in the export line, from the project down, as rows' own errors.
    at = f"projects.{spec.project_id}.labels[0].annotations"
    assert by_kind["unknown_annotation_key"].extra["path"] == f"{at}.frames.2.hotspots"
    assert orjson.loads(by_kind["unknown_annotation_key"].extra["raw"]) == [{"x": 1}]
    assert by_kind["bad_frame_number"].extra["path"] == f"{at}.frames.x9"
    ghost = by_kind["frame_entry_without_annotation"]
    assert ghost.feature_id == "cghost" and ghost.extra["path"] == f"{at}.segments.cghost"
    unknown = by_kind["unknown_annotation_kind"]
    assert unknown.feature_id == "cnew" and unknown.label_id == spec.id("lb", 0)
    assert unknown.extra["path"] == f"{at}.frames.5.objects.cnew"
    assert unknown.extra["annotation_kind"] == "VideoCuboid" and unknown.extra["frame"] == 5
    (kept,) = [r for r in parsed.tables["annotations"] if r["feature_id"] == "cnew"]
    assert kept["valid"] is False and orjson.loads(kept["raw_json"])["annotation_kind"] == (
        "VideoCuboid"
    )


def _result(fid: str, frame: int | None, sha: str) -> MaskResult:
    return MaskResult("dr", "lb", fid, sha, 0, 0, 1, 1, 1, 4, 4, "", "composite", frame)


def test_mask_results_join_by_feature_and_frame() -> None:
    """Before: results joined by feature id only, and video masks were not joined at all."""
    recs = [
        {"annotation_kind": "VideoSegmentationMask", "feature_id": "m", "frame": f}
        for f in (1, 2, 3)
    ]
    out = apply_mask_results(
        recs, [_result("m", 1, "a" * 64), _result("m", 2, "b" * 64)], {"m@3": "mask_empty"}
    )
    assert [r.get("mask_sha256") for r in out] == ["a" * 64, "b" * 64, None]
    assert (out[2]["valid"], out[2]["error_kind"]) == (False, "mask_empty")
    image = apply_mask_results(
        [{"annotation_kind": "ImageSegmentationMask", "feature_id": "m", "frame": None}],
        [_result("m", None, "c" * 64)],
    )
    assert image[0]["mask_sha256"] == "c" * 64


def test_video_composites_are_served_per_frame_and_differ() -> None:
    spec = _spec("video")
    pngs = [video.frame_composite_png(spec, 0, f) for f in (1, 2, 3)]
    assert all(p is not None for p in pngs) and len(set(pngs)) == 3
    assert video.frame_composite_png(spec, 0, 4) is None
