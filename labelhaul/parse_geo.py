"""Geospatial (tiled imagery) objects and tile layers of an export line (#16).

Labelbox exports a geospatial object's geometry as GeoJSON in `[longitude, latitude]`
(`geojson`: `Polygon` for `GeoBoundingBox` and `GeoPolygon`, `Point`, `LineString`), so
the geometry lands as that GeoJSON text (`geometry_geojson`), as ISO WKB
(`geometry_wkb`, what GeoPandas, Shapely, DuckDB spatial and PostGIS read) and with its
CRS (`crs`): "EPSG:4326" on an EPSG tile layer (Labelbox converts to lon/lat whatever the
layer's projection), "simple" (pixel coordinates) on a Simple layer. The tile layer
(`row_data` as imported: `bounds`, `epsg`) lands in `data_rows.tile_bounds` / `tile_crs`.

A segmentation mask on a tiled imagery row (a `GeoSegmentationMask`, or any object with a
`composite_mask` or `mask`) is not landed: Labelbox documents no export shape for one (its
"Export geospatial annotations" page lists boxes, points, polylines and polygons only, and
the SDK's `EPSGTransformer`, which maps tiled imagery shapes between pixels and EPSG, takes
Point, Line, Rectangle and Polygon, no Mask), so a mask PNG of a tile layer has no documented
georeference to turn into geometry. It is an `unsupported_geo_mask` error record with its
JSON path and raw JSON (`records.UNPARSED_KINDS`: the card and summary count it), and no mask
job is queued for it.

WKB is written here by hand: three geometry types, each a header and packed doubles
(OGC 06-103r4 section 8.2), simpler than a dependency on Shapely/GEOS for it.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import math
import struct
from typing import Any

import orjson

# annotation_kind -> the GeoJSON type its geometry has.
GEO_KINDS = {
    "GeoBoundingBox": "Polygon",
    "GeoPoint": "Point",
    "GeoPolyline": "LineString",
    "GeoPolygon": "Polygon",
}
# Mask kinds a tiled imagery row could carry (the image kind when a project mixes media).
GEO_MASK_KINDS = frozenset({"GeoSegmentationMask", "ImageSegmentationMask"})
UNSUPPORTED_MASK = "unsupported_geo_mask"
_WKB_TYPES = {"Point": 1, "LineString": 2, "Polygon": 3}
_MIN_POINTS = {"Point": 1, "LineString": 2, "Polygon": 4}  # a closed ring: 3 corners + close


def tile_layer(row_data: Any) -> tuple[str | None, str | None]:
    """Return a tile layer's (bounds JSON, CRS) from a data row's `row_data`, else (None, None).

    `row_data` of a tiled imagery row is the tile layer as imported, a JSON object (or its
    text) with `tile_layer_url` (`tileLayerUrl`), `bounds` and `epsg` ("EPSG3857", "Simple").
    """
    layer = row_data
    if isinstance(row_data, str):
        if not row_data.lstrip().startswith("{"):
            return None, None
        try:
            layer = orjson.loads(row_data)
        except orjson.JSONDecodeError:
            return None, None
    if not isinstance(layer, dict) or not ({"tile_layer_url", "tileLayerUrl"} & set(layer)):
        return None, None
    bounds = layer.get("bounds")
    epsg = layer.get("epsg")
    return (
        orjson.dumps(bounds).decode() if bounds is not None else None,
        crs_name(epsg) if isinstance(epsg, str) else None,
    )


def unsupported_mask(obj: dict[str, Any], kind: str | None) -> tuple[str, str] | None:
    """Return (error kind, message) when a tiled imagery row's object is a mask, else None."""
    if kind not in GEO_MASK_KINDS and "composite_mask" not in obj and "mask" not in obj:
        return None
    return (
        UNSUPPORTED_MASK,
        f"{kind or 'an object'} with a mask on a tiled imagery row is not landed: Labelbox "
        "documents no geospatial mask export, nor how its pixels map to the tile layer; "
        "kept with its raw JSON (draw polygons to export geometry)",
    )


def crs_name(epsg: str) -> str:
    """Return a CRS name as GIS tools spell it: "EPSG3857" -> "EPSG:3857"; "Simple" -> "simple"."""
    if epsg.lower() == "simple":
        return "simple"
    digits = epsg.upper().removeprefix("EPSG").lstrip(":")
    return f"EPSG:{digits}" if digits.isdigit() else epsg


def geometry(
    obj: dict[str, Any], kind: str, rec: dict[str, Any], tile_crs: str | None
) -> tuple[str, str] | None:
    """Fill a Geo object's geometry columns; return (error kind, message) when it is bad.

    `tile_crs` is the row's tile layer CRS (`tile_layer`): "simple" keeps pixel coordinates.
    """
    geo = obj.get("geojson")
    if not isinstance(geo, dict):
        return ("missing_geometry", f"{kind} has no 'geojson' object; kept with its raw JSON")
    gtype = geo.get("type")
    expected = GEO_KINDS[kind]
    if gtype != expected:
        return ("missing_geometry", f"{kind} geojson type is {gtype!r}, expected {expected!r}")
    coords = geo.get("coordinates")
    parts = _parts(gtype, coords)
    if parts is None:
        return ("missing_geometry", f"{kind} geojson coordinates are not [lon, lat] numbers")
    if not all(math.isfinite(v) for ring in parts for pt in ring for v in pt):
        return ("non_finite_coordinates", f"{kind} has NaN or infinite coordinates")
    need = _MIN_POINTS[gtype]
    if any(len(ring) < need for ring in parts):
        return ("too_few_points", f"{kind} has a {gtype} part with fewer than {need} points")
    rec["geometry_geojson"] = orjson.dumps(
        {"type": gtype, "coordinates": coords}, option=orjson.OPT_SORT_KEYS
    ).decode()
    rec["geometry_wkb"] = to_wkb(gtype, parts)
    rec["crs"] = "simple" if tile_crs == "simple" else "EPSG:4326"
    return None


def _parts(gtype: str, coords: Any) -> list[list[tuple[float, float]]] | None:
    """Return the geometry as rings (a Point: one ring of one point), or None if malformed."""
    if gtype == "Point":
        pt = _xy(coords)
        return None if pt is None else [[pt]]
    rings = [coords] if gtype == "LineString" else coords
    if not isinstance(rings, list) or not rings:
        return None
    out: list[list[tuple[float, float]]] = []
    for ring in rings:
        if not isinstance(ring, list):
            return None
        pts = [_xy(p) for p in ring]
        if any(p is None for p in pts):
            return None
        out.append([p for p in pts if p is not None])
    return out


def _xy(p: Any) -> tuple[float, float] | None:
    if not isinstance(p, list) or len(p) < 2:
        return None
    x, y = p[0], p[1]
    if isinstance(x, bool) or isinstance(y, bool) or not isinstance(x, int | float):
        return None
    if not isinstance(y, int | float):
        return None
    return (float(x), float(y))


def to_wkb(gtype: str, parts: list[list[tuple[float, float]]]) -> bytes:
    """Return ISO WKB (little-endian, 2D) of a Point, LineString or Polygon."""
    head = struct.pack("<BI", 1, _WKB_TYPES[gtype])
    if gtype == "Point":
        return head + struct.pack("<2d", *parts[0][0])
    body = b"" if gtype == "LineString" else struct.pack("<I", len(parts))
    for ring in parts:
        body += struct.pack("<I", len(ring))
        body += b"".join(struct.pack("<2d", x, y) for x, y in ring)
    return head + body
