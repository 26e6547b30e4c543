"""Synthetic video rows, shaped as Labelbox exports video labels.

A video label's `annotations` hold `frames{"<n>": {objects{"<feature id>": {...}},
classifications[]}}`, `segments{"<feature id>": [[start, end], ...]}`,
`key_frame_feature_map{"<feature id>": {"<n>": true|false}}` (false: an interpolated frame,
there only when the export asks for `interpolated_frames`) and the global `classifications[]`.
Each segmentation mask frame has its own composite, `.../masks/<composite id>/index/<n>`.

What every synthetic video row holds (1-based frames, `FRAME_COUNT` of them):

- a `VideoBoundingBox` ("ob" 0) in segments [1, 4] and [6, 8]: key frames 1, 4, 6, 8, the
  frames between interpolated; a nested radio answer on the frames of its first segment;
- a `VideoPoint` ("ob" 1), key frames 2 and 3; a `VideoPolyline` ("ob" 2), key frame 5;
- `spec.instances` `VideoSegmentationMask`s ("mk" j) on key frames 1..`MASK_FRAMES`, a new
  layout every frame (`frame_instance_map`);
- a frame-based radio ("cl" 20) on frames 1-3 and 6, a frame-based checklist ("cl" 21) on
  frames 4-5; the image rows' global classifications.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

import numpy as np
from numpy.typing import NDArray

from labelhaul.emulator import imaging
from labelhaul.emulator.synthetic import SyntheticSpec, answer

FRAME_COUNT = 8
FRAME_RATE = 10
MASK_FRAMES = 3
# Which frames of each tracked object are key frames; the others in its segments are
# interpolated. (feature n, name, annotation_kind, geometry key, segments, key frames)
TRACKS: tuple[tuple[int, str, str, str, list[list[int]], frozenset[int]], ...] = (
    (
        0,
        "bbox_video",
        "VideoBoundingBox",
        "bounding_box",
        [[1, 4], [6, 8]],
        frozenset({1, 4, 6, 8}),
    ),
    (1, "point_video", "VideoPoint", "point", [[2, 3]], frozenset({2, 3})),
    (2, "line_video", "VideoPolyline", "line", [[5, 5]], frozenset({5})),
)
# Frame-based classifications: (question n, name, answer kind, [(start, end), ...]).
FRAME_CLASSIFICATIONS = (
    (20, "frame_radio", "radio", [(1, 3), (6, 6)]),
    (21, "frame_checklist", "checklist", [(4, 5)]),
)
_API = "https://api.labelbox.com/api/v1"


def _seed(spec: SyntheticSpec, row: int, what: str) -> int:
    digest = hashlib.sha256(f"{spec.seed}:{row}:{what}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def frame_instance_map(spec: SyntheticSpec, row: int, frame: int) -> NDArray[np.uint16]:
    """Return the instance map of the masks on `frame` (0 background, j + 1 instance j)."""
    return imaging.instance_map(
        spec.width,
        spec.height,
        spec.instances,
        _seed(spec, row, f"video-layout-{frame}"),
        holes=spec.distinct_masks,
    )


def frame_composite_png(spec: SyntheticSpec, row: int, frame: int) -> bytes | None:
    """Return the composite PNG of `frame` of video row `row`, or None (no masks there)."""
    if not 1 <= frame <= MASK_FRAMES or spec.instances == 0:
        return None
    inst = frame_instance_map(spec, row, frame)
    return imaging.encode_rgb_png(imaging.paint(inst, spec.colors(row)))


def ground_truth_masks(spec: SyntheticSpec, row: int, frame: int) -> dict[str, NDArray[np.bool_]]:
    """Return each mask instance on `frame` of row `row` as a boolean array, by feature id."""
    if not 1 <= frame <= MASK_FRAMES:
        return {}
    inst = frame_instance_map(spec, row, frame)
    return {spec.mask_feature_id(row, j): inst == j + 1 for j in range(spec.instances)}


def composite_url(spec: SyntheticSpec, row: int, frame: int) -> str:
    """Return the URL of the composite of `frame` (the server rewrites host and task)."""
    return f"{_API}/tasks/{spec.id('tk', row)}/masks/{spec.composite_id(row)}/index/{frame}"


def _schema(name: str) -> str:
    return f"csynschema{name[:15]:0<15}"


def _geometry(rng: random.Random, key: str, w: int, h: int) -> Any:
    def xy() -> dict[str, float]:
        return {"x": round(rng.uniform(0, w - 1), 3), "y": round(rng.uniform(0, h - 1), 3)}

    if key == "bounding_box":
        left, top = rng.randint(0, max(0, w - 8)), rng.randint(0, max(0, h - 8))
        return {
            "top": float(top),
            "left": float(left),
            "height": float(rng.randint(1, max(1, h - top))),
            "width": float(rng.randint(1, max(1, w - left))),
        }
    if key == "point":
        return xy()
    return [xy() for _ in range(rng.randint(2, 4))]


def build_frames(
    spec: SyntheticSpec, row: int, *, kind_prefix: str = "Video", tracks: Any = TRACKS
) -> tuple[dict[str, Any], dict[str, list[list[int]]], dict[str, dict[str, bool]]]:
    """Return (frames, segments, key_frame_feature_map) of the tracked objects of row `row`."""
    rng = random.Random(_seed(spec, row, f"{kind_prefix}-frames"))
    w, h = spec.width, spec.height
    frames: dict[str, Any] = {}
    segments: dict[str, list[list[int]]] = {}
    key_map: dict[str, dict[str, bool]] = {}

    def frame(n: int) -> dict[str, Any]:
        holder: dict[str, Any] = frames.setdefault(str(n), {"objects": {}, "classifications": []})
        return holder

    for n, name, kind, key, segs, keys in tracks:
        fid = spec.id("ob", row, n)
        segments[fid] = [list(s) for s in segs]
        key_map[fid] = {}
        for si, (start, end) in enumerate(segs):
            for f in range(start, end + 1):
                nested: list[dict[str, Any]] = []
                if kind.endswith("BoundingBox") and si == 0:
                    nested = [
                        {
                            "feature_id": spec.id("cl", row, 30),
                            "feature_schema_id": _schema("nested_radio"),
                            "name": "nested_radio",
                            "value": "nested_radio",
                            "radio_answer": answer(spec, row, 30, "radio_option_1"),
                        }
                    ]
                frame(f)["objects"][fid] = {
                    "feature_id": fid,
                    "feature_schema_id": _schema(name),
                    "name": name,
                    "value": name,
                    "annotation_kind": kind,
                    "classifications": nested,
                    key: _geometry(rng, key, w, h),
                }
                key_map[fid][str(f)] = f in keys
    return frames, segments, key_map


def build(spec: SyntheticSpec, row: int, base: dict[str, Any]) -> dict[str, Any]:
    """Turn the image-shaped `base` row into video row `row` (see the module docstring)."""
    frames, segments, key_map = build_frames(spec, row)
    for j, color in enumerate(spec.colors(row)):
        fid = spec.mask_feature_id(row, j)
        name = ("car", "person", "tree", "road")[j % 4]
        segments[fid] = [[1, MASK_FRAMES]]
        key_map[fid] = {}
        for f in range(1, MASK_FRAMES + 1):
            frames.setdefault(str(f), {"objects": {}, "classifications": []})
            frames[str(f)]["objects"][fid] = {
                "feature_id": fid,
                "feature_schema_id": _schema(name),
                "name": name,
                "value": name,
                "annotation_kind": "VideoSegmentationMask",
                "classifications": [],
                "composite_mask": {"url": composite_url(spec, row, f), "color_rgb": list(color)},
            }
            key_map[fid][str(f)] = True
    for n, name, answer_kind, ranges in FRAME_CLASSIFICATIONS:
        qid = spec.id("cl", row, n)
        segments[qid] = [[a, b] for a, b in ranges]
        for a, b in ranges:
            for f in range(a, b + 1):
                q: dict[str, Any] = {
                    "feature_id": qid,
                    "feature_schema_id": _schema(name),
                    "name": name,
                    "value": name,
                }
                if answer_kind == "radio":
                    q["radio_answer"] = answer(spec, row, n, f"{name}_answer_{a}")
                else:
                    q["checklist_answers"] = [
                        answer(spec, row, n, f"{name}_first"),
                        answer(spec, row, n + 1, f"{name}_second"),
                    ]
                frames.setdefault(str(f), {"objects": {}, "classifications": []})
                frames[str(f)]["classifications"].append(q)
    ordered = {k: frames[k] for k in sorted(frames, key=int)}
    # A legacy project's unlabelled rows have no label to fill.
    for label in base["projects"][spec.project_id]["labels"]:
        global_cls = label["annotations"]["classifications"]
        label["label_kind"] = "Video"
        label["annotations"] = {
            "frames": ordered,
            "segments": segments,
            "key_frame_feature_map": key_map,
            "classifications": global_cls,
        }
    base["data_row"]["row_data"] = base["data_row"]["row_data"].replace(".png", ".mp4")
    base["media_attributes"] = {
        "width": spec.width,
        "height": spec.height,
        "mime_type": "video/mp4",
        "frame_rate": FRAME_RATE,
        "frame_count": FRAME_COUNT,
    }
    return base


def drop_interpolated(annotations: dict[str, Any]) -> None:
    """Remove interpolated frames from a label's annotations, as an export without
    `interpolated_frames` has them: only key frames, and only `true` in the key frame map.

    Handles video (`frames`) and DICOM (`groups`, key frames by plane) in place.
    """
    key_map = annotations.get("key_frame_feature_map")
    if not isinstance(key_map, dict):
        return
    if isinstance(annotations.get("groups"), dict):
        for fid, planes in key_map.items():
            for plane, by_frame in (planes or {}).items():
                group = annotations["groups"].get(plane) or {}
                _drop(group.get("frames") or {}, fid, by_frame)
        return
    frames = annotations.get("frames") or {}
    for fid, by_frame in key_map.items():
        _drop(frames, fid, by_frame)


def _drop(frames: dict[str, Any], fid: str, by_frame: dict[str, bool]) -> None:
    for f in [f for f, key in by_frame.items() if key is False]:
        del by_frame[f]
        frame = frames.get(f)
        if frame is None:
            continue
        frame.get("objects", {}).pop(fid, None)
        if not frame.get("objects") and not frame.get("classifications"):
            del frames[f]


def move_one_frame(annotations: dict[str, Any], number: int) -> None:
    """Edit one object on one frame: the first key-frame box of the label moves right."""
    frames = annotations.get("frames") or {}
    for fkey in sorted(frames, key=int):
        for obj in (frames[fkey].get("objects") or {}).values():
            if obj.get("annotation_kind") == "VideoBoundingBox":
                obj["bounding_box"]["left"] = float(obj["bounding_box"]["left"]) + number
                return
