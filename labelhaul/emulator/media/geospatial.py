"""Synthetic geospatial (tiled imagery) rows (`--media geospatial`).

Labelbox exports geospatial objects with a GeoJSON geometry in `[longitude, latitude]`
(docs: "Export geospatial annotations"): `GeoBoundingBox` as a 5-point `Polygon` (bottom
left, top left, top right, bottom right, bottom left), `GeoPoint` as a `Point`,
`GeoPolyline` as a `LineString`, `GeoPolygon` as a `Polygon`. The data row's `row_data` is
the tile layer as imported (docs: "Geospatial"): `tile_layer_url`, `bounds`
(`[[lat, lng], [lat, lng]]` for an EPSG layer), `min_zoom`, `max_zoom`, `epsg`.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import copy
import json
import random
from typing import Any

from labelhaul.emulator.synthetic import SyntheticSpec

EPSGS = ("EPSG4326", "EPSG3857")


def bounds_of(spec: SyntheticSpec, row: int) -> list[list[float]]:
    """Return row `row`'s tile layer bounds, `[[lat, lng] south west, [lat, lng] north east]`."""
    lat = round(19.40 + (row % 10) * 0.01, 6)
    lng = round(-99.21 + (row % 7) * 0.01, 6)
    return [[lat, lng], [round(lat + 0.01, 6), round(lng + 0.01, 6)]]


def tile_layer_of(spec: SyntheticSpec, row: int) -> dict[str, Any]:
    """Return row `row`'s tile layer (its exported `row_data`, decoded)."""
    return {
        "tile_layer_url": f"https://tiles.example.com/{spec.tag}/{row}/{{z}}/{{x}}/{{y}}.png",
        "bounds": bounds_of(spec, row),
        "min_zoom": 12,
        "max_zoom": 20,
        "epsg": EPSGS[row % len(EPSGS)],
    }


def build(spec: SyntheticSpec, row: int, base: dict[str, Any]) -> dict[str, Any]:
    """Return row `row` as a geospatial data row (see the module docstring)."""
    out = copy.deepcopy(base)
    out["data_row"]["row_data"] = json.dumps(tile_layer_of(spec, row), sort_keys=True)
    # docs "Media attributes": application/x-tms-geo (EPSG layers; x-tms-simple for Simple).
    out["media_attributes"] = {"mime_type": "application/x-tms-geo"}
    (s, w), (n, e) = bounds_of(spec, row)
    rng = random.Random(spec._row_seed(row, "geo"))

    def lnglat() -> list[float]:
        return [round(rng.uniform(w, e), 7), round(rng.uniform(s, n), 7)]

    x0, y0 = lnglat()
    dx, dy = 0.001, 0.0008
    box = [[x0, y0], [x0, y0 + dy], [x0 + dx, y0 + dy], [x0 + dx, y0], [x0, y0]]
    ring = [lnglat() for _ in range(4)]
    ring.append(ring[0])

    def obj(k: int, name: str, kind: str, gtype: str, coords: Any) -> dict[str, Any]:
        return {
            "feature_id": spec.id("go", row, k),
            "feature_schema_id": f"csynschemageo{k:011d}",
            "name": name,
            "value": name,
            "annotation_kind": kind,
            "classifications": [],
            "geojson": {"type": gtype, "coordinates": coords},
        }

    objects = [
        obj(0, "bbox_geo", "GeoBoundingBox", "Polygon", [box]),
        obj(1, "point_geo", "GeoPoint", "Point", lnglat()),
        obj(2, "polyline_geo", "GeoPolyline", "LineString", [lnglat() for _ in range(3)]),
        obj(3, "polygon_geo", "GeoPolygon", "Polygon", [ring]),
    ]
    objects[0]["classifications"] = [
        {
            "feature_id": spec.id("cl", row, 0),
            "feature_schema_id": "csynschemageoq000000000",
            "name": "roof_type",
            "value": "roof_type",
            "radio_answer": {
                "feature_id": spec.id("an", row, 0),
                "feature_schema_id": "csynschemageoa000000000",
                "name": "flat" if row % 2 else "pitched",
                "value": "flat" if row % 2 else "pitched",
                "classifications": [],
            },
        }
    ]
    for project in out["projects"].values():
        for label in project["labels"]:
            label["annotations"] = {"objects": objects, "classifications": [], "relationships": []}
    return out
