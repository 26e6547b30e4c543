"""Write COCO instances JSON (and model-run results files), streamed from table records.

The file is written section by section — images, then annotations, then categories — from
iterables (e.g. `tables.iter_parquet_records`), so nothing but the category map and a few
counters stays in memory.

Choices, so nobody has to guess:
- Image ids are derived from the data row id (53 bits of its SHA-256), not assigned in
  order: the same data row has the same image id in every version and in the results file,
  and no id map has to be held in memory.
- `images[].file_name` is the global key, else the external id, else the last path segment of
  `row_data` percent-decoded (never a query string), else the data row id; `file_name_source`
  says which. Two images with one name: the later one in the file gets `~<8 hex of sha256 of
  its data row id>` before the extension and keeps the plain name in `file_name_collision`.
  `coco_url` is `row_data` without signing parameters (see `unsigned_url`).
- Category ids are keyed by `feature_schema_id` (`name:<name>` for an object without one) and
  derived from it: 31 bits of its SHA-256, so a renamed class keeps its id and a project's
  COCO and its model runs' COCO give a class the same id without sharing any state. The map
  key → {"id", "name"} is passed in and returned updated (the manifest's `category_map`);
  known keys keep their id, and in the (~1e-7) case of two keys hashing alike the later one
  takes the next free id. Every category of the map is written (a class with no object this
  version keeps its id). Ids are not contiguous: map them to indices in training code.
- Ground truth that mixes kinds still evaluates as "segm": boxes also carry their rectangle
  as a polygon, points a zero-area polygon at the point (COCOeval reads `segmentation` of
  every ground-truth annotation).
- A data row with several labels: only the label chosen by the label policy
  (`labelhaul.labelpolicy`) is written; the others are counted in `labels_not_selected`.
- Bounding boxes → `bbox`; polygons → `segmentation` polygons ([x1, y1, x2, y2, ...]) with
  area by the shoelace formula and bbox from the points; masks → compressed RLE
  (`{"size": [h, w], "counts": ...}`) with area and bbox from the mask columns; points →
  `keypoints` [x, y, 2] with `num_keypoints` 1, bbox [x, y, 0, 0] and area 0.
- Polylines are NOT written to COCO instances: COCO has no open-line type, and a line as a
  degenerate box or polygon would silently teach a detector the wrong thing. They are in the
  `annotations` Parquet table (`points`).
- Rows with `valid` False, masks whose mask stage failed (no RLE), and unknown kinds are
  skipped and counted in the summary's `skipped`.
- Video and DICOM (annotations rows with a `frame`): one COCO image per annotated frame
  (a frame some selected label or prediction has a row on), `file_name` `<video's name>/<frame>`
  (`<name>/<plane>/<frame>` for a DICOM plane), where the video's name is chosen and made
  unique as a still image's is. Fields as CocoVID (mmtracking / mmdet's video datasets,
  which the YouTube-VIS, MOT and BDD100K converters write): images carry `video_id`,
  `frame_id` (0-based: Labelbox's 1-based frame number - 1) and Labelbox's `frame`;
  annotations carry `video_id`, `instance_id` (the track: one per feature id, which Labelbox
  keeps across frames) and `keyframe` (false: interpolated); a `videos` section (after
  `categories`, only when there are videos) lists one entry per video (per plane of a DICOM
  data row) with its size, `fps` and `frame_count`, annotated frames or not. Image ids are 53
  bits of the SHA-256 of `<data row id>/<frame>` (`<data row id>/<plane>/<frame>`), video
  ids those of the data row id (`<data row id>/<plane>`), instance ids those of the feature
  id: the same in every version. Width and height are the data row's. A video row's
  geometry kinds (`VideoBoundingBox`, `DICOMPolyline`, ...) are written as the image kind of
  the same shape. Image-only datasets are written byte for byte as before.
- Model runs: the ground truth is the `label` rows; `write_coco_results` writes the
  `prediction` rows as a detection results list (`score` = confidence, 1.0 when none) that
  `pycocotools.COCO.loadRes` accepts. pycocotools picks the result type from the first
  entry, so one results file holds one iou type: "bbox" (boxes, polygons' and masks' boxes)
  or "segm" (masks and polygons as RLE; polygons rasterised exactly as pycocotools does).

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import numpy as np
import orjson

from labelhaul.labelpolicy import is_selected

MASK_KIND = "ImageSegmentationMask"


@dataclass
class CocoSummary:
    """What a COCO writer wrote."""

    path: Path
    images: int = 0
    annotations: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # reason → count
    # category key (feature_schema_id, or `name:<name>`) → {"id": int, "name": str}
    category_map: dict[str, dict[str, Any]] = field(default_factory=dict)
    file_name_collisions: int = 0  # images whose file name got a suffix
    labels_not_selected: int = 0  # annotations of labels the label policy left out
    videos: int = 0  # video (and DICOM plane) entries of the `videos` section
    frame_images: int = 0  # images that are one frame of a video


def image_id_for(data_row_id: str) -> int:
    """Return the stable COCO image id of a data row (53 bits, safe as a JSON number)."""
    digest = hashlib.sha256(data_row_id.encode()).digest()
    return (int.from_bytes(digest[:8], "big") >> 11) or 1


# (plane, frame) of one frame of a video or DICOM data row; plane is None for a video.
FrameKey = tuple[str | None, int]


def frame_image_id_for(data_row_id: str, frame: int, plane: str | None = None) -> int:
    """Return the stable COCO image id of one frame of a video (or of a DICOM plane)."""
    return image_id_for(f"{data_row_id}/{plane}/{frame}" if plane else f"{data_row_id}/{frame}")


def video_id_for(data_row_id: str, plane: str | None = None) -> int:
    """Return the stable CocoVID video id of a video data row (or of one DICOM plane)."""
    return image_id_for(f"{data_row_id}/{plane}" if plane else data_row_id)


def instance_id_for(feature_id: str) -> int:
    """Return the stable CocoVID instance (track) id of a feature tracked over frames."""
    return image_id_for(f"instance:{feature_id}")


def frame_file_name(video_name: str, frame: int, plane: str | None = None) -> str:
    """Return the COCO `file_name` of a frame: `<video name>/<frame>` (`/<plane>/` between)."""
    return f"{video_name}/{plane}/{frame}" if plane else f"{video_name}/{frame}"


def is_frame_media(image: Mapping[str, Any]) -> bool:
    """Return whether a data_rows record is a video or DICOM (frames, not one image)."""
    mime = str(image.get("mime_type") or "").lower()
    return image.get("frame_count") is not None or mime.startswith("video/") or "dicom" in mime


def frame_index(
    annotations: Iterable[Mapping[str, Any]],
    selected_labels: Mapping[str, str] | None = None,
) -> dict[str, list[FrameKey]]:
    """Return data row id -> its annotated frames, sorted: the frames COCO makes images of.

    A frame counts when a row of the label the label policy chose (or a prediction) is on it,
    whatever its kind: a frame with only a polyline is still a labelled frame. Memory: one
    (plane, frame) pair per annotated frame of the video rows, as `write_coco` holds one name
    per image.
    """
    chosen = selected_labels or {}
    found: dict[str, set[FrameKey]] = {}
    for rec in annotations:
        frame = rec.get("frame")
        if frame is None or not is_selected(rec, chosen):
            continue
        plane = rec.get("plane") or None
        found.setdefault(str(rec["data_row_id"]), set()).add((plane, int(frame)))
    return {drid: sorted(keys, key=_frame_order) for drid, keys in found.items()}


def frame_index_from_parquet(
    path: str | Path, selected_labels: Mapping[str, str] | None = None
) -> dict[str, list[FrameKey]]:
    """Return `frame_index` of an annotations Parquet table, reading only five columns.

    A table written before frames had columns (no `frame`) has no frames.
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(str(path))
    present = set(pf.schema_arrow.names)
    if "frame" not in present:
        return {}
    wanted = ["data_row_id", "frame", "plane", "label_id", "source"]
    columns = [c for c in wanted if c in present]

    def rows() -> Iterator[dict[str, Any]]:
        for batch in pf.iter_batches(columns=columns, batch_size=10_000):
            # Still images' rows (frame null) never become Python objects.
            on_frames = batch.filter(pc.is_valid(batch.column("frame")))
            if on_frames.num_rows:
                yield from on_frames.to_pylist()

    return frame_index(rows(), selected_labels)


def _frame_order(key: FrameKey) -> tuple[str, int]:
    return (key[0] or "", key[1])


_CATEGORY_ID_SPACE = 2**31 - 1  # positive int32: fits every COCO tool's id type


def category_key(rec: Mapping[str, Any]) -> str:
    """Return what a class is known by: its feature schema id, else `name:<its name>`."""
    schema = rec.get("feature_schema_id")
    if schema:
        return str(schema)
    return f"name:{_category_name(rec)}"


def normalize_category_map(category_map: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Return a copy of a recorded category map as key → {"id", "name"}.

    Maps written before categories were keyed by feature schema id (name → int) are left
    out: their ids were assigned in order of appearance, which is exactly what changes.
    """
    out: dict[str, dict[str, Any]] = {}
    for key, value in (category_map or {}).items():
        if isinstance(value, Mapping) and isinstance(value.get("id"), int):
            out[str(key)] = {"id": int(value["id"]), "name": str(value.get("name") or key)}
    return out


def category_id_for(
    key: str, category_map: dict[str, dict[str, Any]], name: str | None = None
) -> int:
    """Return the category id of class `key`, adding it to the map when new.

    The id is derived from the key alone (31 bits of its SHA-256), so the same class gets the
    same id in every dataset; on a collision with another key of the map, the next free id.
    """
    hit = category_map.get(key)
    if hit is None:
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
        cid = int.from_bytes(digest[:4], "big") % _CATEGORY_ID_SPACE + 1
        used = {int(v["id"]) for v in category_map.values()}
        while cid in used:
            cid = cid % _CATEGORY_ID_SPACE + 1
        hit = category_map[key] = {"id": cid, "name": name or key}
    return int(hit["id"])


# Query parameters that sign a URL: Labelbox-hosted (Expires/KeyName/Signature), CloudFront
# (Policy/Key-Pair-Id), S3 presigned v2 (AWSAccessKeyId) and v4 (X-Amz-*), GCS (X-Goog-*).
_SIGNING_PARAMS = frozenset({"expires", "keyname", "signature", "policy", "key-pair-id"})
_SIGNING_PREFIXES = ("x-amz-", "x-goog-", "awsaccesskeyid")


def unsigned_url(url: str | None) -> str | None:
    """Return `url` without its signing query parameters (other parameters kept in order)."""
    if not url:
        return url
    parts = urlsplit(str(url))
    if not parts.query:
        return str(url)
    kept = [
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if k.lower() not in _SIGNING_PARAMS and not k.lower().startswith(_SIGNING_PREFIXES)
    ]
    return urlunsplit(parts._replace(query=urlencode(kept)))


def file_name_and_source(image: Mapping[str, Any]) -> tuple[str, str]:
    """Return (file name, which field it came from) for a data_rows record."""
    for column in ("global_key", "external_id"):
        value = image.get(column)
        if value:
            return str(value), column
    row_data = image.get("row_data")
    if row_data:
        # The last segment, percent-decoded (Labelbox-hosted names hold `%2F`), and the last
        # segment of that again, so the name never holds a slash, a query or a fragment.
        segment = urlsplit(str(row_data)).path.rsplit("/", 1)[-1]
        name = unquote(segment).replace("\\", "/").rsplit("/", 1)[-1]
        if name and name not in (".", ".."):
            return name, "row_data"
    return str(image["data_row_id"]), "data_row_id"


def _suffixed(name: str, data_row_id: str) -> str:
    tag = hashlib.sha256(data_row_id.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    path = PurePosixPath(name)
    suffix = path.suffix if path.suffix != name else ""
    stem = name[: len(name) - len(suffix)] if suffix else name
    return f"{stem}~{tag}{suffix}"


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


# Media whose objects COCO writes: a video's or a DICOM plane's frame is an image.
_KIND_MEDIA = ("Image", "Video", "DICOM")


def image_kind(kind: Any) -> str | None:
    """Return the image kind of the same shape (`VideoBoundingBox` -> `ImageBoundingBox`)."""
    if not isinstance(kind, str):
        return None
    for media in _KIND_MEDIA:
        if kind.startswith(media) and len(kind) > len(media):
            return "Image" + kind[len(media) :]
    return kind


def annotation_geometry(rec: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """Return (COCO geometry fields, None) for an annotation record, or (None, skip reason)."""
    if rec.get("valid") is False:
        return None, str(rec.get("error_kind") or "invalid")
    kind = image_kind(rec.get("annotation_kind"))
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


def polygon_rle(flat: list[float], height: int, width: int) -> str:
    """Return the COCO compressed RLE of a polygon, rasterised as pycocotools' rleFrPoly does.

    A port of `rleFrPoly` (maskApi.c), vectorised per edge: the boundary is walked at 5x
    scale and its crossings of each pixel column's centre become the run boundaries. Gives
    byte-identical counts to `pycocotools.mask.frPyObjects([flat], h, w)` without depending
    on pycocotools. The C code's double arithmetic is kept operation for operation.
    """
    from labelhaul.maskcodec import rle_string

    h, w = int(height), int(width)
    k = len(flat) // 2
    scale = 5.0
    xy = np.asarray(flat[: 2 * k], dtype=np.float64).reshape(k, 2)
    # (int)(scale*v + .5): truncation toward zero, as C's cast.
    x = np.trunc(scale * xy[:, 0] + 0.5).astype(np.int64)
    y = np.trunc(scale * xy[:, 1] + 0.5).astype(np.int64)
    x, y = np.append(x, x[:1]), np.append(y, y[:1])
    xs, xe, ys, ye = x[:-1], x[1:], y[:-1], y[1:]
    dx, dy = np.abs(xe - xs), np.abs(ys - ye)
    wide = dx >= dy
    flip = (wide & (xs > xe)) | (~wide & (ys > ye))
    xs, xe = np.where(flip, xe, xs), np.where(flip, xs, xe)
    ys, ye = np.where(flip, ye, ys), np.where(flip, ys, ye)
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = np.where(
            wide,
            np.where(dx > 0, (ye - ys) / np.maximum(dx, 1), 0.0),
            (xe - xs) / np.maximum(dy, 1),
        )
    # Every edge walked at once: point d of edge j, for d in 0..max(dx, dy).
    n = np.maximum(dx, dy) + 1
    edge = np.repeat(np.arange(k), n)
    d = np.arange(int(n.sum()), dtype=np.int64) - np.repeat(np.cumsum(n) - n, n)
    span = np.where(wide, dx, dy)[edge]
    t = np.where(flip[edge], span - d, d)
    moved = np.trunc(
        np.where(wide, ys, xs)[edge] + slope[edge] * t.astype(np.float64) + 0.5
    ).astype(np.int64)
    along = t + np.where(wide, xs, ys)[edge]
    u = np.where(wide[edge], along, moved)
    v = np.where(wide[edge], moved, along)
    step = u[1:] != u[:-1]
    cur_u, prev_u = u[1:][step], u[:-1][step]
    cur_v, prev_v = v[1:][step], v[:-1][step]
    xd = (np.where(cur_u < prev_u, cur_u, cur_u - 1).astype(np.float64) + 0.5) / scale - 0.5
    keep = (np.floor(xd) == xd) & (xd >= 0) & (xd <= w - 1)
    yd = (np.where(cur_v < prev_v, cur_v, prev_v).astype(np.float64) + 0.5) / scale - 0.5
    yd = np.ceil(np.clip(yd, 0.0, float(h)))
    bounds = np.sort(np.append(xd[keep].astype(np.int64) * h + yd[keep].astype(np.int64), h * w))
    diffs = np.diff(bounds, prepend=0)
    if not (diffs[1:] == 0).any():
        return rle_string(diffs)  # no empty run to merge over (the common case)
    deltas = diffs.tolist()
    counts = [deltas[0]]
    i = 1
    while i < len(deltas):
        if deltas[i] > 0:
            counts.append(deltas[i])
            i += 1
        else:
            # A zero run: the runs either side of it are one run.
            i += 1
            if i < len(deltas):
                counts[-1] += deltas[i]
                i += 1
    return rle_string(counts)


def ground_truth_segmentation(
    rec: Mapping[str, Any], geom: Mapping[str, Any]
) -> list[list[float]] | None:
    """Return the polygon that lets a box or a point be read by COCOeval's "segm" mode.

    A box is its rectangle; a point a zero-area triangle on the point (COCO has no point
    segmentation, and COCOeval reads `segmentation` of every ground-truth annotation).
    """
    kind = image_kind(rec.get("annotation_kind"))
    if kind == "ImageBoundingBox":
        x, y, bw, bh = (float(v) for v in geom["bbox"])
        return [[x, y, x + bw, y, x + bw, y + bh, x, y + bh]]
    if kind == "ImagePoint":
        px, py = float(geom["keypoints"][0]), float(geom["keypoints"][1])
        return [[px, py, px, py, px, py]]
    return None


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
    category_map: Mapping[str, Any] | None = None,
    *,
    source: str = "label",
    info: Mapping[str, Any] | None = None,
    selected_labels: Mapping[str, str] | None = None,
    frames: Mapping[str, Sequence[FrameKey]] | None = None,
) -> CocoSummary:
    """Stream a COCO instances file from `data_rows` and `annotations` table records.

    Args:
        path: the file to write.
        images: data_rows records; consecutive records of the same data row (one per project
            or model run) give one image.
        annotations: annotations records; only those with `source == source` are written.
        category_map: category key → {"id", "name"} from the previous version (not
            modified; the updated map is in the returned summary).
        source: "label" for ground truth (projects, model-run labels).
        info: the COCO `info` section.
        selected_labels: data row id → the label chosen by the label policy
            (`labelhaul.labelpolicy.select_labels`); other labels of those rows are left out.
        frames: `frame_index` of the annotations: video and DICOM rows become one image per
            annotated frame (see the module docstring). None writes every data row as one
            image, as releases before per-frame images did (rebuilding their COCO files).
    """
    out = Path(path)
    cmap = normalize_category_map(category_map)
    summary = CocoSummary(path=out, category_map=cmap)
    skipped: Counter[str] = Counter()
    chosen = selected_labels or {}
    # The video and DICOM rows written (None: every row is a still image).
    frame_rows: set[str] | None = None if frames is None else set()
    videos: list[dict[str, Any]] = []  # one small entry per video: written after categories
    with out.open("wb") as fh:
        fh.write(b"{")
        # Sorted keys: the manifest (sorted too) gives the reader the same bytes back.
        fh.write(b'"info":' + orjson.dumps(dict(info or {}), option=orjson.OPT_SORT_KEYS))
        fh.write(b',"licenses":[]')
        arr = _ArrayWriter(fh, "images", first=False)
        last: str | None = None
        # Memory: one entry per distinct file name (the names are needed to keep them unique).
        names: set[str] = set()
        for img in images:
            drid = str(img["data_row_id"])
            if drid == last:
                continue
            last = drid
            name, name_source = file_name_and_source(img)
            if name in names:
                unique = _suffixed(name, drid)
                while unique in names:
                    unique = _suffixed(unique, drid)
                collision: str | None = name
                summary.file_name_collisions += 1
                name = unique
            else:
                collision = None
            names.add(name)
            if frames is not None and frame_rows is not None:
                keys = frames.get(drid)
                if keys is not None or is_frame_media(img):
                    frame_rows.add(drid)
                    video_entries, frame_entries = _frame_images(
                        img, name, name_source, collision, keys or ()
                    )
                    videos.extend(video_entries)
                    for frame_entry in frame_entries:
                        _add_unique(frame_entry, names, drid, summary)
                        arr.add(frame_entry)
                    continue
            entry: dict[str, Any] = {
                "id": image_id_for(drid),
                "file_name": name,
                "width": img.get("width"),
                "height": img.get("height"),
                "data_row_id": drid,
                "global_key": img.get("global_key"),
                "coco_url": unsigned_url(img.get("row_data")),
                "file_name_source": name_source,
            }
            if collision is not None:
                entry["file_name_collision"] = collision
            arr.add(entry)
        del names
        arr.close()
        summary.images = arr.n
        arr = _ArrayWriter(fh, "annotations", first=False)
        for rec in annotations:
            if rec.get("source", "label") != source:
                continue
            if not is_selected(rec, chosen):
                summary.labels_not_selected += 1
                continue
            frame = rec.get("frame") if frame_rows is not None else None
            if frame is None and frame_rows and str(rec["data_row_id"]) in frame_rows:
                # A video's object is always on a frame; one without has no image to be on.
                skipped["video_object_without_frame"] += 1
                continue
            geom, reason = annotation_geometry(rec)
            if geom is None:
                skipped[reason or "unknown"] += 1
                continue
            if "segmentation" not in geom:
                geom["segmentation"] = ground_truth_segmentation(rec, geom)
            item: dict[str, Any] = {
                "id": arr.n + 1,
                "image_id": _image_id_of(rec, frame),
                "category_id": category_id_for(category_key(rec), cmap, _category_name(rec)),
                "iscrowd": 0,
                **geom,
                "feature_id": rec.get("feature_id"),
                "label_id": rec.get("label_id"),
            }
            if frame is not None:
                plane = rec.get("plane") or None
                item["video_id"] = video_id_for(str(rec["data_row_id"]), plane)
                item["instance_id"] = instance_id_for(str(rec.get("feature_id")))
                item["frame"] = int(frame)
                item["keyframe"] = rec.get("keyframe")
            arr.add(item)
        arr.close()
        summary.annotations = arr.n
        arr = _ArrayWriter(fh, "categories", first=False)
        for key, cat in sorted(cmap.items(), key=lambda kv: int(kv[1]["id"])):
            schema = None if key.startswith("name:") else key
            arr.add(
                {
                    "id": cat["id"],
                    "name": cat["name"],
                    "supercategory": cat["name"],
                    "feature_schema_id": schema,
                }
            )
        arr.close()
        if videos:
            arr = _ArrayWriter(fh, "videos", first=False)
            for video in videos:
                arr.add(video)
            arr.close()
        fh.write(b"}\n")
    summary.skipped = dict(skipped)
    summary.videos = len(videos)
    summary.frame_images = sum(int(v["annotated_frames"]) for v in videos)
    return summary


def _image_id_of(rec: Mapping[str, Any], frame: Any) -> int:
    drid = str(rec["data_row_id"])
    if frame is None:
        return image_id_for(drid)
    return frame_image_id_for(drid, int(frame), rec.get("plane") or None)


def _frame_images(
    img: Mapping[str, Any],
    name: str,
    name_source: str,
    collision: str | None,
    keys: Sequence[FrameKey],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Return (videos entries, image entries) of one video or DICOM data row."""
    drid = str(img["data_row_id"])
    planes: dict[str | None, list[int]] = {}
    for plane, frame in keys:
        planes.setdefault(plane, []).append(frame)
    if not planes:
        planes[None] = []  # a video with no annotated frame is still a video
    videos: list[dict[str, Any]] = []
    images: list[dict[str, Any]] = []
    url = unsigned_url(img.get("row_data"))
    for plane, numbers in planes.items():
        vid = video_id_for(drid, plane)
        video: dict[str, Any] = {
            "id": vid,
            "name": f"{name}/{plane}" if plane else name,
            "width": img.get("width"),
            "height": img.get("height"),
            "fps": img.get("frame_rate"),
            "frame_count": img.get("frame_count"),
            "annotated_frames": len(numbers),
            "data_row_id": drid,
            "global_key": img.get("global_key"),
            "coco_url": url,
        }
        if plane:
            video["plane"] = plane
        videos.append(video)
        for frame in numbers:
            entry: dict[str, Any] = {
                "id": frame_image_id_for(drid, frame, plane),
                "file_name": frame_file_name(name, frame, plane),
                "width": img.get("width"),
                "height": img.get("height"),
                "data_row_id": drid,
                "global_key": img.get("global_key"),
                "file_name_source": name_source,
                "video_id": vid,
                "frame_id": frame - 1,
                "frame": frame,
            }
            if plane:
                entry["plane"] = plane
            if collision is not None:
                entry["file_name_collision"] = frame_file_name(collision, frame, plane)
            images.append(entry)
    return videos, images


def _add_unique(
    entry: dict[str, Any], names: set[str], data_row_id: str, summary: CocoSummary
) -> None:
    """Keep a frame's file name unique too (a still image's global key may be `clip/3`)."""
    name = str(entry["file_name"])
    if name in names:
        unique = _suffixed(name, data_row_id)
        while unique in names:
            unique = _suffixed(unique, data_row_id)
        entry.setdefault("file_name_collision", name)
        entry["file_name"] = unique
        summary.file_name_collisions += 1
        name = unique
    names.add(name)


def write_coco_results(
    path: str | Path,
    annotations: Iterable[Mapping[str, Any]],
    category_map: Mapping[str, Any] | None = None,
    *,
    iou_type: str = "bbox",
    source: str = "prediction",
) -> CocoSummary:
    """Stream a COCO detection results list (for `COCO.loadRes`) from prediction records.

    Args:
        iou_type: "bbox" (boxes, and the boxes of polygons and masks) or "segm" (masks, and
            polygons rasterised, as compressed RLE). Points and polylines are skipped.
        category_map: as for `write_coco`; write the results before the ground truth and pass
            the returned map on, so a class only predicted still gets a category there.
    """
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type must be 'bbox' or 'segm', not {iou_type!r}")
    out = Path(path)
    cmap = normalize_category_map(category_map)
    summary = CocoSummary(path=out, category_map=cmap)
    skipped: Counter[str] = Counter()
    n = 0
    with out.open("wb") as fh:
        fh.write(b"[")
        for rec in annotations:
            if rec.get("source") != source:
                continue
            geom, reason = annotation_geometry(rec)
            kind = image_kind(rec.get("annotation_kind"))
            if geom is None:
                skipped[reason or "unknown"] += 1
                continue
            segm_kinds = (MASK_KIND, "ImagePolygon")
            if kind == "ImagePoint" or (iou_type == "segm" and kind not in segm_kinds):
                skipped[f"not_{iou_type}"] += 1
                continue
            if iou_type == "segm" and kind == "ImagePolygon":
                h, w = rec.get("image_height"), rec.get("image_width")
                if h is None or w is None:
                    skipped["missing_image_size"] += 1
                    continue
                # loadRes reads only compressed RLE as segmentation results.
                geom = {
                    "segmentation": {
                        "size": [int(h), int(w)],
                        "counts": polygon_rle(geom["segmentation"][0], int(h), int(w)),
                    }
                }
            score = rec.get("confidence")
            item: dict[str, Any] = {
                # A video's frame is its own image, as in the ground truth (`write_coco`).
                "image_id": _image_id_of(rec, rec.get("frame")),
                "category_id": category_id_for(category_key(rec), cmap, _category_name(rec)),
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


# --------------------------------------------------------------------------- earlier releases


def write_coco_legacy(
    path: str | Path,
    images: Iterable[Mapping[str, Any]],
    annotations: Iterable[Mapping[str, Any]],
    category_map: Mapping[str, Any] | None = None,
    *,
    source: str = "label",
    info: Mapping[str, Any] | None = None,
) -> CocoSummary:
    """Write COCO exactly as releases before schema-keyed categories did.

    Only for rebuilding the COCO file of a delta version those releases landed (its
    manifest has no `coco` section): the reader checks the rebuilt bytes against the sha256
    the sync recorded. Category ids by name (max + 1 in order of appearance), file names
    from the global key or the row data's raw basename, `coco_url` as stored, no
    segmentation for boxes and points, every label.
    """
    out = Path(path)
    cmap = {str(k): int(v) for k, v in (category_map or {}).items() if isinstance(v, int)}

    def category(name: str) -> int:
        cid = cmap.get(name)
        if cid is None:
            cid = cmap[name] = max(cmap.values(), default=0) + 1
        return cid

    def file_name(image: Mapping[str, Any]) -> str:
        if image.get("global_key"):
            return str(image["global_key"])
        if image.get("row_data"):
            name = PurePosixPath(urlsplit(str(image["row_data"])).path).name
            if name:
                return name
        return str(image["data_row_id"])

    summary = CocoSummary(path=out)
    skipped: Counter[str] = Counter()
    with out.open("wb") as fh:
        fh.write(b"{")
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
                    "file_name": file_name(img),
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
                    "category_id": category(_category_name(rec)),
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
