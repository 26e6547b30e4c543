"""Synthetic DICOM rows, shaped as Labelbox exports DICOM labels.

A DICOM label's `annotations` hold `groups{"Axial"|"Sagittal"|"Coronal": {name,
classifications[], frames{"<n>": {objects{...}, classifications[]}}}}`, with the segments
keyed by plane (`segments{"<plane>": {"<feature id>": [[start, end]]}}`) and the key frame map
by feature, then plane (`key_frame_feature_map{"<feature id>": {"<plane>": {"<n>": bool}}}`),
as Labelbox's own export tests show them (labelbox-python, `expected_export_v2_dicom`).

What every synthetic DICOM row holds: a `DICOMPolyline` ("ob" 0) on Axial slices 1-3 (key
frames 1 and 3, slice 2 interpolated), a `DICOMPolyline` ("ob" 1) on Sagittal slice 4, and
nothing on Coronal; the image rows' global classifications.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from labelhaul.emulator.media.video import build_frames

if TYPE_CHECKING:
    from labelhaul.emulator.synthetic import SyntheticSpec

PLANES = ("Axial", "Sagittal", "Coronal")
SLICE_COUNT = 8
# (feature n, name, annotation_kind, geometry key, segments, key frames) by plane.
TRACKS_BY_PLANE: dict[str, tuple[Any, ...]] = {
    "Axial": ((0, "axial_line", "DICOMPolyline", "line", [[1, 3]], frozenset({1, 3})),),
    "Sagittal": ((1, "sagittal_line", "DICOMPolyline", "line", [[4, 4]], frozenset({4})),),
    "Coronal": (),
}


def build(spec: SyntheticSpec, row: int, base: dict[str, Any]) -> dict[str, Any]:
    """Turn the image-shaped `base` row into DICOM row `row` (see the module docstring)."""
    groups: dict[str, Any] = {}
    segments: dict[str, Any] = {}
    key_map: dict[str, dict[str, dict[str, bool]]] = {}
    for plane in PLANES:
        frames, segs, keys = build_frames(
            spec, row, kind_prefix=f"DICOM-{plane}", tracks=TRACKS_BY_PLANE[plane]
        )
        groups[plane] = {"name": plane, "classifications": [], "frames": frames}
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
