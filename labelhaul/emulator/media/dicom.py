"""Synthetic DICOM rows, shaped as Labelbox exports DICOM labels.

A DICOM label's `annotations` hold `groups{"Axial"|"Sagittal"|"Coronal": {name,
classifications[], frames{"<n>": {objects{...}, classifications[]}}}}`, with the segments
keyed by plane (`segments{"<plane>": {"<feature id>": [[start, end]]}}`) and the key frame map
by feature, then plane (`key_frame_feature_map{"<feature id>": {"<plane>": {"<n>": bool}}}`),
as Labelbox's own export tests show them (labelbox-python, `expected_export_v2_dicom`).

What every synthetic DICOM row holds: a `DICOMPolyline` ("ob" 0) on Axial slices 1-3 (key
frames 1 and 3, slice 2 interpolated), a `DICOMPolyline` ("ob" 1) on Sagittal slice 4, and
nothing on Coronal; `spec.instances` `DICOMSegmentationMask`s ("mk" j) on Axial AND Sagittal
slices 1..`MASK_FRAMES`, the same feature ids in both planes (so one feature has a frame 1 in
each plane), a new layout per plane and slice (`frame_instance_map`); the image rows' global
classifications.

Segmentation masks are served like video composites, one per slice: each plane has its own
composite id (`spec.id("cm", row, 1 + plane index)`) and `.../masks/<that id>/index/<slice>`
is the composite of that slice. Labelbox's documentation shows no DICOM composite URL; a
composite per plane is what the per-frame `/index/<n>` convention needs, since slice numbers
restart in every plane.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from labelhaul.emulator import imaging
from labelhaul.emulator.media.video import build_frames

if TYPE_CHECKING:
    from labelhaul.emulator.synthetic import SyntheticSpec

PLANES = ("Axial", "Sagittal", "Coronal")
SLICE_COUNT = 8
# Slices 1..MASK_FRAMES of these planes hold the segmentation masks.
MASK_PLANES = ("Axial", "Sagittal")
MASK_FRAMES = 2
_API = "https://api.labelbox.com/api/v1"
# (feature n, name, annotation_kind, geometry key, segments, key frames) by plane.
TRACKS_BY_PLANE: dict[str, tuple[Any, ...]] = {
    "Axial": ((0, "axial_line", "DICOMPolyline", "line", [[1, 3]], frozenset({1, 3})),),
    "Sagittal": ((1, "sagittal_line", "DICOMPolyline", "line", [[4, 4]], frozenset({4})),),
    "Coronal": (),
}


def _seed(spec: SyntheticSpec, row: int, what: str) -> int:
    digest = hashlib.sha256(f"{spec.seed}:{row}:{what}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def composite_id(spec: SyntheticSpec, row: int, plane: str) -> str:
    """Return the composite mask id of one plane of DICOM row `row`."""
    return spec.id("cm", row, 1 + PLANES.index(plane))


def plane_of_composite(n: int) -> str | None:
    """Return the plane whose composite id ends in item `n` (see `composite_id`), or None."""
    return PLANES[n - 1] if 1 <= n <= len(PLANES) else None


def composite_url(spec: SyntheticSpec, row: int, plane: str, frame: int) -> str:
    """Return the URL of the composite of one slice (the server rewrites host and task)."""
    return f"{_API}/tasks/{spec.id('tk', row)}/masks/{composite_id(spec, row, plane)}/index/{frame}"


def has_masks(spec: SyntheticSpec, plane: str, frame: int) -> bool:
    """Whether slice `frame` of `plane` holds segmentation masks."""
    return spec.instances > 0 and plane in MASK_PLANES and 1 <= frame <= MASK_FRAMES


def plane_size(spec: SyntheticSpec, plane: str) -> tuple[int, int]:
    """Return (width, height) of one plane's slices: a volume's planes differ in size, and
    `media_attributes` gives one size; here Axial is that size and the others are its
    transpose."""
    return (spec.width, spec.height) if plane == "Axial" else (spec.height, spec.width)


def frame_instance_map(spec: SyntheticSpec, row: int, plane: str, frame: int) -> NDArray[np.uint16]:
    """Return the instance map of one slice (0 background, j + 1 instance j)."""
    return imaging.instance_map(
        *plane_size(spec, plane),
        spec.instances,
        _seed(spec, row, f"dicom-{plane}-layout-{frame}"),
        holes=spec.distinct_masks,
    )


def frame_composite_png(spec: SyntheticSpec, row: int, plane: str, frame: int) -> bytes | None:
    """Return the composite PNG of one slice of one plane, or None (no masks there)."""
    if not has_masks(spec, plane, frame):
        return None
    inst = frame_instance_map(spec, row, plane, frame)
    return imaging.encode_rgb_png(imaging.paint(inst, spec.colors(row)))


def ground_truth_masks(
    spec: SyntheticSpec, row: int, plane: str, frame: int
) -> dict[str, NDArray[np.bool_]]:
    """Return each mask instance on one slice of one plane as a boolean array, by feature."""
    if not has_masks(spec, plane, frame):
        return {}
    inst = frame_instance_map(spec, row, plane, frame)
    return {spec.mask_feature_id(row, j): inst == j + 1 for j in range(spec.instances)}


def _add_masks(
    spec: SyntheticSpec,
    row: int,
    plane: str,
    frames: dict[str, Any],
    segments: dict[str, Any],
    keys: dict[str, dict[str, bool]],
) -> None:
    """Put the segmentation masks of `plane` on its slices (see the module docstring)."""
    if plane not in MASK_PLANES:
        return
    for j, color in enumerate(spec.colors(row)):
        fid = spec.mask_feature_id(row, j)
        name = ("lesion", "organ", "vessel", "bone")[j % 4]
        segments[fid] = [[1, MASK_FRAMES]]
        keys[fid] = {}
        for f in range(1, MASK_FRAMES + 1):
            holder = frames.setdefault(str(f), {"objects": {}, "classifications": []})
            holder["objects"][fid] = {
                "feature_id": fid,
                "feature_schema_id": f"csynschema{name[:15]:0<15}",
                "name": name,
                "value": name,
                "annotation_kind": "DICOMSegmentationMask",
                "classifications": [],
                "composite_mask": {
                    "url": composite_url(spec, row, plane, f),
                    "color_rgb": list(color),
                },
            }
            keys[fid][str(f)] = True


def build(spec: SyntheticSpec, row: int, base: dict[str, Any]) -> dict[str, Any]:
    """Turn the image-shaped `base` row into DICOM row `row` (see the module docstring)."""
    groups: dict[str, Any] = {}
    segments: dict[str, Any] = {}
    key_map: dict[str, dict[str, dict[str, bool]]] = {}
    for plane in PLANES:
        frames, segs, keys = build_frames(
            spec, row, kind_prefix=f"DICOM-{plane}", tracks=TRACKS_BY_PLANE[plane]
        )
        _add_masks(spec, row, plane, frames, segs, keys)
        ordered = {k: frames[k] for k in sorted(frames, key=int)}
        groups[plane] = {"name": plane, "classifications": [], "frames": ordered}
        segments[plane] = segs
        for fid, by_frame in keys.items():
            key_map.setdefault(fid, {p: {} for p in PLANES})[plane] = by_frame
    # A legacy project's unlabelled rows have no label to fill.
    for label in base["projects"][spec.project_id]["labels"]:
        global_cls = label["annotations"]["classifications"]
        label["annotations"] = {
            "groups": groups,
            "segments": segments,
            "classifications": global_cls,
            "key_frame_feature_map": key_map,
        }
    base["data_row"]["row_data"] = base["data_row"]["row_data"].replace(".png", ".dcm")
    base["media_attributes"] = {
        "width": spec.width,
        "height": spec.height,
        "mime_type": "application/dicom",
        "frame_count": SLICE_COUNT,
    }
    return base
