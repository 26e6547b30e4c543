"""Write COCO instances JSON (and model-run results files), streamed from table records.

The file is written section by section — images, then annotations, then categories — from
iterables (e.g. `tables.iter_parquet_records`), so nothing but the category map and a few
counters stays in memory.

Choices, so nobody has to guess:
- Image ids are derived from the data row id (53 bits of its SHA-256), not assigned in
  order: the same data row has the same image id in every version and in the results file,
  and no id map has to be held in memory.
- Category ids come from a map name → id passed in and returned updated: known names keep
  their id across versions, new names get max + 1 in order of first appearance. Every
  category of the map is written (a class with no object this version keeps its id).
- Bounding boxes → `bbox`; polygons → `segmentation` polygons ([x1, y1, x2, y2, ...]) with
  area by the shoelace formula and bbox from the points; masks → compressed RLE
  (`{"size": [h, w], "counts": ...}`) with area and bbox from the mask columns; points →
  `keypoints` [x, y, 2] with `num_keypoints` 1, bbox [x, y, 0, 0] and area 0.
- Polylines are NOT written to COCO instances: COCO has no open-line type, and a line as a
  degenerate box or polygon would silently teach a detector the wrong thing. They are in the
  `annotations` Parquet table (`points`).
- Rows with `valid` False, masks whose mask stage failed (no RLE), and unknown kinds are
  skipped and counted in the summary's `skipped`.
- Model runs: the ground truth is the `label` rows; `write_coco_results` writes the
  `prediction` rows as a detection results list (`score` = confidence, 1.0 when none) that
  `pycocotools.COCO.loadRes` accepts. pycocotools picks the result type from the first
  entry, so one results file holds one iou type: "bbox" (boxes, polygons' and masks' boxes)
  or "segm" (masks as RLE).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any
from urllib.parse import urlparse

import orjson

MASK_KIND = "ImageSegmentationMask"


@dataclass
class CocoSummary:
    """What a COCO writer wrote."""

    path: Path
    images: int = 0
    annotations: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # reason → count
    category_map: dict[str, int] = field(default_factory=dict)


def image_id_for(data_row_id: str) -> int:
    """Return the stable COCO image id of a data row (53 bits, safe as a JSON number)."""
    digest = hashlib.sha256(data_row_id.encode()).digest()
    return (int.from_bytes(digest[:8], "big") >> 11) or 1


def category_id_for(name: str, category_map: dict[str, int]) -> int:
    """Return the category id of `name`, adding it to the map as max + 1 when new."""
    cid = category_map.get(name)
    if cid is None:
        cid = max(category_map.values(), default=0) + 1
        category_map[name] = cid
    return cid


def file_name_for(image: Mapping[str, Any]) -> str:
    """Return an image's file name: its global key, else the row data's basename, else its id."""
    gk = image.get("global_key")
    if gk:
        return str(gk)
    row_data = image.get("row_data")
    if row_data:
        name = PurePosixPath(urlparse(str(row_data)).path).name
        if name:
            return name
    return str(image["data_row_id"])


def shoelace_area(points: list[tuple[float, float]]) -> float:
    """Return the area of a simple polygon given its vertices (closing point optional)."""
    n = len(points)
    twice = 0.0
    for i in range(n):
        x1, y1 = points[i]
        x2, y2 = points[(i + 1) % n]
        twice += x1 * y2 - x2 * y1
    return abs(twice) / 2.0


def _bbox_of(points: list[tuple[float, float]]) -> list[float]:
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    return [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]


def _points(rec: Mapping[str, Any]) -> list[tuple[float, float]]:
    return [(float(p["x"]), float(p["y"])) for p in rec.get("points") or ()]


def annotation_geometry(rec: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """Return (COCO geometry fields, None) for an annotation record, or (None, skip reason)."""
    if rec.get("valid") is False:
        return None, str(rec.get("error_kind") or "invalid")
    kind = rec.get("annotation_kind")
    if kind == "ImageBoundingBox":
        box = [rec.get(k) for k in ("bbox_left", "bbox_top", "bbox_width", "bbox_height")]
        if any(v is None for v in box):
            return None, "missing_geometry"
        bbox = [float(v) for v in box if v is not None]
        return {"bbox": bbox, "area": bbox[2] * bbox[3]}, None
    if kind == "ImagePolygon":
        pts = _points(rec)
        if len(pts) < 3:
            return None, "missing_geometry"
        flat = [c for p in pts for c in p]
        return {"segmentation": [flat], "area": shoelace_area(pts), "bbox": _bbox_of(pts)}, None
    if kind == "ImagePoint":
        x, y = rec.get("point_x"), rec.get("point_y")
        if x is None or y is None:
            return None, "missing_geometry"
        return {
            "keypoints": [float(x), float(y), 2],
            "num_keypoints": 1,
            "bbox": [float(x), float(y), 0.0, 0.0],
            "area": 0.0,
        }, None
    if kind == MASK_KIND:
        rle, h, w = rec.get("mask_rle"), rec.get("image_height"), rec.get("image_width")
        if not rle or h is None or w is None:
            return None, "mask_missing"
        bbox = [float(rec.get(k) or 0) for k in ("mask_x", "mask_y", "mask_w", "mask_h")]
        return {
            "segmentation": {"size": [int(h), int(w)], "counts": str(rle)},
            "area": float(rec.get("mask_area") or 0),
            "bbox": bbox,
        }, None
    if kind == "ImagePolyline":
        return None, "polyline"
    return None, "unsupported_kind"


class _ArrayWriter:
    """Write a JSON array item by item."""

    def __init__(self, fh: IO[bytes], key: str, first: bool) -> None:
        self.fh = fh
        self.n = 0
        fh.write(b"" if first else b",")
        fh.write(orjson.dumps(key) + b":[")

    def add(self, item: Mapping[str, Any]) -> None:
        self.fh.write(b"\n" + orjson.dumps(item) if self.n == 0 else b",\n" + orjson.dumps(item))
        self.n += 1

    def close(self) -> None:
        self.fh.write(b"]")


def write_coco(
    path: str | Path,
    images: Iterable[Mapping[str, Any]],
    annotations: Iterable[Mapping[str, Any]],
    category_map: Mapping[str, int] | None = None,
    *,
    source: str = "label",
    info: Mapping[str, Any] | None = None,
) -> CocoSummary:
    """Stream a COCO instances file from `data_rows` and `annotations` table records.

    Args:
        path: the file to write.
        images: data_rows records; consecutive records of the same data row (one per project
            or model run) give one image.
        annotations: annotations records; only those with `source == source` are written.
        category_map: name → id from the previous version (not modified; the updated map is
            in the returned summary).
        source: "label" for ground truth (projects, model-run labels).
        info: the COCO `info` section.
    """
    out = Path(path)
    cmap = dict(category_map or {})
    summary = CocoSummary(path=out, category_map=cmap)
    skipped: Counter[str] = Counter()
    with out.open("wb") as fh:
        fh.write(b"{")
        # Sorted keys: the manifest (sorted too) gives the reader the same bytes back.
        fh.write(b'"info":' + orjson.dumps(dict(info or {}), option=orjson.OPT_SORT_KEYS))
        fh.write(b',"licenses":[]')
        arr = _ArrayWriter(fh, "images", first=False)
        last: str | None = None
        for img in images:
            drid = str(img["data_row_id"])
            if drid == last:
                continue
            last = drid
            arr.add(
                {
                    "id": image_id_for(drid),
                    "file_name": file_name_for(img),
                    "width": img.get("width"),
                    "height": img.get("height"),
                    "data_row_id": drid,
                    "global_key": img.get("global_key"),
                    "coco_url": img.get("row_data"),
                }
            )
        arr.close()
        summary.images = arr.n
        arr = _ArrayWriter(fh, "annotations", first=False)
        for rec in annotations:
            if rec.get("source", "label") != source:
                continue
            geom, reason = annotation_geometry(rec)
            if geom is None:
                skipped[reason or "unknown"] += 1
                continue
            arr.add(
                {
                    "id": arr.n + 1,
                    "image_id": image_id_for(str(rec["data_row_id"])),
                    "category_id": category_id_for(_category_name(rec), cmap),
                    "iscrowd": 0,
                    **geom,
                    "feature_id": rec.get("feature_id"),
                    "label_id": rec.get("label_id"),
                }
            )
        arr.close()
        summary.annotations = arr.n
        arr = _ArrayWriter(fh, "categories", first=False)
        for name, cid in sorted(cmap.items(), key=lambda kv: kv[1]):
            arr.add({"id": cid, "name": name, "supercategory": name})
        arr.close()
        fh.write(b"}\n")
    summary.skipped = dict(skipped)
    return summary


def write_coco_results(
    path: str | Path,
    annotations: Iterable[Mapping[str, Any]],
    category_map: Mapping[str, int] | None = None,
    *,
    iou_type: str = "bbox",
    source: str = "prediction",
) -> CocoSummary:
    """Stream a COCO detection results list (for `COCO.loadRes`) from prediction records.

    Args:
        iou_type: "bbox" (boxes, and the boxes of polygons and masks) or "segm" (masks as
            compressed RLE). Points and polylines are skipped.
        category_map: as for `write_coco`; write the results before the ground truth and pass
            the returned map on, so a class only predicted still gets a category there.
    """
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type must be 'bbox' or 'segm', not {iou_type!r}")
    out = Path(path)
    cmap = dict(category_map or {})
    summary = CocoSummary(path=out, category_map=cmap)
    skipped: Counter[str] = Counter()
    n = 0
    with out.open("wb") as fh:
        fh.write(b"[")
        for rec in annotations:
            if rec.get("source") != source:
                continue
            geom, reason = annotation_geometry(rec)
            kind = rec.get("annotation_kind")
            if geom is None:
                skipped[reason or "unknown"] += 1
                continue
            if kind == "ImagePoint" or (iou_type == "segm" and kind != MASK_KIND):
                skipped[f"not_{iou_type}"] += 1
                continue
            score = rec.get("confidence")
            item: dict[str, Any] = {
                "image_id": image_id_for(str(rec["data_row_id"])),
                "category_id": category_id_for(_category_name(rec), cmap),
                "score": 1.0 if score is None else float(score),
            }
            if iou_type == "segm":
                # No bbox: loadRes would take the bbox branch; it derives bbox/area from RLE.
                item["segmentation"] = geom["segmentation"]
            else:
                item["bbox"] = geom["bbox"]
            item["feature_id"] = rec.get("feature_id")
            fh.write((b"\n" if n == 0 else b",\n") + orjson.dumps(item))
            n += 1
        fh.write(b"]\n")
    summary.annotations = n
    summary.skipped = dict(skipped)
    return summary


def _category_name(rec: Mapping[str, Any]) -> str:
    return str(rec.get("name") or rec.get("value") or rec.get("feature_schema_id") or "unknown")
