"""Parse the frame-based annotations of video and DICOM labels into table records.

A video label's annotations are `frames{"<n>": {objects{"<feature id>": {...}},
classifications[]}}` with `segments{"<feature id>": [[start, end], ...]}` and
`key_frame_feature_map{"<feature id>": {"<n>": true|false}}`; a DICOM label has the same per
plane under `groups{"Axial"|"Sagittal"|"Coronal": {...}}`. Labelbox's own export tests key
DICOM `segments` by plane then feature and `key_frame_feature_map` by feature then plane at
the top of `annotations`; `segments` and `key_frame_feature_map` inside a group (by feature)
are read too.

What lands:
- one `annotations` row per object per frame, with `frame`, `keyframe` (the key frame map;
  false = interpolated, null when the map does not name the frame), `segment_index` (which
  of the feature's `segments` holds the frame), `plane` for DICOM, and the geometry columns
  images use (`Video*`/`DICOM*` kinds are read as their `Image*` twins); nested answers of an
  object as `classifications` rows with `frame_start` = `frame_end` = the frame;
- each segmentation mask frame as its own mask job (`MaskJob.frame`, and `MaskJob.plane` for
  DICOM): one composite per frame (per plane), joined back by (feature, plane, frame);
- frame-based classifications as `classifications` rows, one per run of consecutive frames
  with the same answer (`frame_start`, `frame_end`, scope "frame"); a DICOM group's own
  classifications with its `plane`.
Anything else (a frame key that is not a number, an unknown key in a frame or group, a
`segments` or key frame entry naming no annotation) is an error record with the JSON path
and the raw JSON.

This module does not import `labelhaul.rows` (rows calls it): `RowParser` is the part of
`rows._RowParser` it uses.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import orjson

from labelhaul.coerce import as_dict as _dict
from labelhaul.coerce import as_json
from labelhaul.coerce import as_list as _list
from labelhaul.coerce import as_str as _str
from labelhaul.masktypes import MaskInstance
from labelhaul.parser_api import LabelContext, RowParser

# The keys of a label's `annotations` this module reads.
FRAME_ANNOTATION_KEYS = frozenset({"frames", "segments", "key_frame_feature_map", "groups"})
# Frame-based kinds and the image kind whose geometry they share.
FRAME_KINDS = {
    "VideoBoundingBox": "ImageBoundingBox",
    "VideoPoint": "ImagePoint",
    "VideoPolyline": "ImagePolyline",
    "VideoPolygon": "ImagePolygon",
    "VideoSegmentationMask": "ImageSegmentationMask",
    "DICOMPolyline": "ImagePolyline",
    "DICOMSegmentationMask": "ImageSegmentationMask",
}
# Labelbox's export shows only `VideoBoundingBox` (labelbox-python's export test) and
# `DICOMPolyline` (docs: "Export DICOM annotations"); the other names above follow that
# pattern unconfirmed. So any `Video<X>` / `DICOM<X>` whose `Image<X>` has geometry is read
# as that twin too (`frame_twin`): `DICOMPoint` or `VideoPolyline`, whichever Labelbox emits.
_IMAGE_KINDS = frozenset(
    {"ImageBoundingBox", "ImagePoint", "ImagePolyline", "ImagePolygon", "ImageSegmentationMask"}
)
PLANES = ("Axial", "Sagittal", "Coronal")
_FRAME_KEYS = frozenset({"objects", "classifications"})
_GROUP_KEYS = frozenset({"name", "classifications", "frames", "segments", "key_frame_feature_map"})


def frame_twin(kind: str | None) -> str | None:
    """Return the image kind whose geometry a frame-based kind has, or None."""
    if kind is None:
        return None
    if kind in FRAME_KINDS:
        return FRAME_KINDS[kind]
    for prefix in ("Video", "DICOM"):
        if kind.startswith(prefix) and f"Image{kind[len(prefix) :]}" in _IMAGE_KINDS:
            return f"Image{kind[len(prefix) :]}"
    return None


def parse_frame_annotations(
    p: RowParser, annotations: Mapping[str, Any], ctx: LabelContext
) -> None:
    """Land a label's `frames` (video) or `groups` (DICOM) and their segments and key frames."""
    # Error records name the JSON path in the export line, as rows' own errors do.
    root = f"{ctx.path}.annotations" if ctx.path else "annotations"
    groups = annotations.get("groups")
    segments = _dict(annotations.get("segments"))
    key_map = _dict(annotations.get("key_frame_feature_map"))
    if isinstance(groups, dict):
        claimed: set[str] = set()
        for plane, group in groups.items():
            plane = str(plane)
            group = _dict(group)
            where = f"{root}.groups.{plane}"
            _unknown_keys(p, ctx, group, _GROUP_KEYS, where)
            plane_segments = _dict(group.get("segments")) or _dict(segments.get(plane))
            plane_keys = _dict(group.get("key_frame_feature_map"))
            for fid, by_plane in key_map.items():
                if isinstance(by_plane, dict) and isinstance(by_plane.get(plane), dict):
                    plane_keys.setdefault(fid, by_plane[plane])
            claimed |= _parse_frames(
                p, ctx, _dict(group.get("frames")), plane_segments, plane_keys, plane, where
            )
            for q in _list(group.get("classifications")):
                _parse_ranged(p, ctx, _dict(q), None, None, plane)
        # Top-level entries of planes that have no group.
        for plane, entries in segments.items():
            if str(plane) not in groups:
                _orphans(p, ctx, _dict(entries), set(), f"{root}.segments.{plane}")
        _orphan_key_map(p, ctx, key_map, claimed, root)
        return
    claimed = _parse_frames(p, ctx, _dict(annotations.get("frames")), segments, key_map, None, root)
    del claimed


def _parse_frames(
    p: RowParser,
    ctx: LabelContext,
    frames: dict[str, Any],
    segments: dict[str, Any],
    key_map: dict[str, Any],
    plane: str | None,
    where: str,
) -> set[str]:
    """Land every frame of one video (or one DICOM plane); return the feature ids seen."""
    seen_features: set[str] = set()
    runs: dict[bytes, tuple[dict[str, Any], list[int]]] = {}
    numbered: list[tuple[int, str, dict[str, Any]]] = []
    for fkey, frame in frames.items():
        n = _frame_number(fkey)
        if n is None:
            p._error(
                "bad_frame_number",
                f"frame key {fkey!r} is not a frame number; the frame was not landed",
                label_id=ctx.label_id,
                path=f"{where}.frames.{fkey}",
                raw=as_json(frame),
            )
            continue
        numbered.append((n, str(fkey), _dict(frame)))
    for n, fkey, frame in sorted(numbered, key=lambda t: t[0]):
        fpath = f"{where}.frames.{fkey}"
        _unknown_keys(p, ctx, frame, _FRAME_KEYS, fpath)
        masks: dict[str | None, list[MaskInstance]] = {}
        for key, obj in _dict(frame.get("objects")).items():
            obj = _dict(obj)
            fid = _str(obj.get("feature_id")) or str(key)
            seen_features.add(fid)
            _parse_frame_object(
                p, ctx, obj, fid, n, plane, masks, segments, key_map, f"{fpath}.objects.{key}"
            )
        p._add_mask_jobs(masks, ctx, frame=n, plane=plane)
        for q in _list(frame.get("classifications")):
            q = _dict(q)
            qid = _str(q.get("feature_id"))
            if qid is not None:
                seen_features.add(qid)
            canon = orjson.dumps(q, option=orjson.OPT_SORT_KEYS)
            runs.setdefault(canon, (q, []))[1].append(n)
    for q, frame_numbers in runs.values():
        for start, end in _ranges(frame_numbers):
            _parse_ranged(p, ctx, q, start, end, plane)
    _orphans(p, ctx, segments, seen_features, f"{where}.segments")
    if plane is None:
        _orphan_key_map(p, ctx, key_map, seen_features, where)
    return seen_features


def _parse_frame_object(
    p: RowParser,
    ctx: LabelContext,
    obj: dict[str, Any],
    fid: str,
    frame: int,
    plane: str | None,
    masks: dict[str | None, list[MaskInstance]],
    segments: dict[str, Any],
    key_map: dict[str, Any],
    path: str,
) -> None:
    kind = _str(obj.get("annotation_kind"))
    twin = frame_twin(kind)
    # Read as its image twin (same geometry keys), then put the real kind back.
    parsed = {**obj, "feature_id": fid, "annotation_kind": twin or kind}
    n_ann, n_cls, n_err = (
        len(p.tables["annotations"]),
        len(p.tables["classifications"]),
        len(p.errors),
    )
    rels: list[dict[str, Any]] = []
    p._parse_object(parsed, ctx, set(), masks, rels)
    if rels:
        p._error(
            "unsupported_frame_relationship",
            f"relationship {fid} on frame {frame} is not landed (frame-based relationships "
            "are not a documented export shape); kept in the raw export",
            label_id=ctx.label_id,
            feature_id=fid,
            path=path,
            raw=as_json(obj),
        )
    keyframe = _dict(key_map.get(fid)).get(str(frame))
    for rec in p.tables["annotations"][n_ann:]:
        rec["annotation_kind"] = kind
        rec["frame"] = frame
        rec["keyframe"] = keyframe if isinstance(keyframe, bool) else None
        rec["segment_index"] = _segment_index(segments.get(fid), frame)
        rec["plane"] = plane
        if rec.get("raw_json") is not None:
            rec["raw_json"] = as_json(obj)
    for rec in p.tables["classifications"][n_cls:]:
        rec["frame_start"] = rec["frame_end"] = frame
        rec["plane"] = plane
    for i in range(n_err, len(p.errors)):
        err = p.errors[i]
        extra = {**err.extra, "path": path, "frame": frame}
        if "annotation_kind" in extra:
            extra["annotation_kind"] = kind
        if plane is not None:
            extra["plane"] = plane
        p.errors[i] = dataclasses.replace(err, extra=extra)


def _parse_ranged(
    p: RowParser,
    ctx: LabelContext,
    q: dict[str, Any],
    start: int | None,
    end: int | None,
    plane: str | None,
) -> None:
    """Land one classification that holds on frames start..end (None: the whole plane)."""
    n_cls = len(p.tables["classifications"])
    p._parse_question(q, ctx, parent=None, obj_id=None, depth=0, path=())
    for rec in p.tables["classifications"][n_cls:]:
        if start is not None:
            rec["scope"] = "frame"
        rec["frame_start"] = start
        rec["frame_end"] = end
        rec["plane"] = plane


def _orphans(
    p: RowParser, ctx: LabelContext, entries: dict[str, Any], known: set[str], where: str
) -> None:
    for fid, value in entries.items():
        if str(fid) not in known:
            p._error(
                "frame_entry_without_annotation",
                f"{where} names feature {fid}, which is on no frame of this label; not landed",
                label_id=ctx.label_id,
                feature_id=str(fid),
                severity="warning",
                path=f"{where}.{fid}",
                raw=as_json(value),
            )


def _orphan_key_map(
    p: RowParser, ctx: LabelContext, key_map: dict[str, Any], known: set[str], root: str
) -> None:
    _orphans(p, ctx, key_map, known, f"{root}.key_frame_feature_map")


def _unknown_keys(
    p: RowParser, ctx: LabelContext, holder: dict[str, Any], known: frozenset[str], where: str
) -> None:
    for key in sorted(set(holder) - known):
        p._error(
            "unknown_annotation_key",
            f"{where}.{key} is not a key labelhaul knows; kept in the raw export",
            label_id=ctx.label_id,
            path=f"{where}.{key}",
            raw=as_json(holder[key]),
        )


def _segment_index(segments: Any, frame: int) -> int | None:
    for i, seg in enumerate(_list(segments)):
        if isinstance(seg, list) and len(seg) == 2:
            start, end = _frame_number(seg[0]), _frame_number(seg[1])
            if start is not None and end is not None and start <= frame <= end:
                return i
    return None


def _ranges(frames: list[int]) -> list[tuple[int, int]]:
    """Return the runs of consecutive frame numbers as (start, end) pairs."""
    out: list[tuple[int, int]] = []
    for n in sorted(set(frames)):
        if out and n == out[-1][1] + 1:
            out[-1] = (out[-1][0], n)
        else:
            out.append((n, n))
    return out


def _frame_number(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, str) and v.strip().isdigit():
        return int(v)
    return None
