"""A segmentation mask on a geospatial (tiled imagery) row is never landed in silence.

Labelbox documents no export shape for a geospatial mask (its "Export geospatial
annotations" page lists boxes, points, polylines and polygons; the SDK's `EPSGTransformer`
maps points, lines, rectangles and polygons only), and nothing says where a mask PNG's pixels
lie on a tile layer. So such an
object is an `unsupported_geo_mask` error record with its ids, JSON path and raw JSON, the
annotations row says so, no mask job is queued, and the card and summary count it.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from labelhaul.emulator.synthetic import SyntheticSpec, build_row
from labelhaul.records import UNPARSED_KINDS, unparsed_counts
from labelhaul.rows import ParsedRow, parse_export_line
from labelhaul.store import render_dataset_card
from labelhaul.sync.report import summary_markdown
from tests.helpers import make_manifest

_API = "https://api.labelbox.com/api/v1"


def _geo_row_with(obj: dict[str, Any]) -> tuple[dict[str, Any], SyntheticSpec]:
    spec = SyntheticSpec.make(
        n_rows=1, instances=1, seed=2, width=32, height=24, media=["geospatial"]
    )
    row = build_row(spec, 0)
    row["projects"][spec.project_id]["labels"][0]["annotations"]["objects"].append(obj)
    return row, spec


def _parse(row: dict[str, Any], spec: SyntheticSpec) -> ParsedRow:
    parsed = parse_export_line(orjson.dumps(row), 0, source_id=spec.project_id)
    assert isinstance(parsed, ParsedRow)
    return parsed


def _mask_obj(kind: str) -> dict[str, Any]:
    return {
        "feature_id": "cgeomask00000000000000001",
        "feature_schema_id": "cgeomaskschema00000000001",
        "name": "flooded",
        "value": "flooded",
        "annotation_kind": kind,
        "classifications": [],
        "composite_mask": {
            "url": f"{_API}/tasks/ctask/masks/ccomposite/index/1",
            "color_rgb": [10, 20, 30],
        },
    }


@pytest.mark.parametrize("kind", ["GeoSegmentationMask", "ImageSegmentationMask"])
def test_a_mask_on_a_tiled_imagery_row_is_an_error_with_its_raw_json(kind: str) -> None:
    """Before: an ImageSegmentationMask on a tile layer queued a mask job (a pixel mask with
    no georeference, landed as if valid); a GeoSegmentationMask was "not a kind labelhaul
    knows"."""
    obj = _mask_obj(kind)
    row, spec = _geo_row_with(obj)
    parsed = _parse(row, spec)
    assert parsed.mask_jobs == []
    (err,) = parsed.errors
    assert err.kind == "unsupported_geo_mask" and err.kind in UNPARSED_KINDS
    assert (err.data_row_id, err.label_id, err.feature_id) == (
        spec.data_row_id(0),
        spec.id("lb", 0),
        obj["feature_id"],
    )
    assert err.extra["path"] == f"projects.{spec.project_id}.labels[0].annotations.objects[4]"
    assert "no geospatial mask export" in err.message
    (rec,) = [a for a in parsed.tables["annotations"] if a["feature_id"] == obj["feature_id"]]
    assert (rec["valid"], rec["error_kind"]) == (False, "unsupported_geo_mask")
    assert orjson.loads(rec["raw_json"]) == obj
    # The documented kinds of the same row still land.
    kinds = {a["annotation_kind"] for a in parsed.tables["annotations"] if a["valid"]}
    assert kinds == {"GeoBoundingBox", "GeoPoint", "GeoPolyline", "GeoPolygon"}


def test_an_image_mask_on_an_image_row_is_still_a_mask_job() -> None:
    spec = SyntheticSpec.make(n_rows=1, instances=2, seed=2, width=32, height=24, media=["image"])
    parsed = _parse(build_row(spec, 0), spec)
    assert parsed.errors == [] and len(parsed.mask_jobs) == 1


def test_card_and_summary_count_unlanded_geo_masks() -> None:
    errors = {"unsupported_geo_mask": 2}
    assert unparsed_counts(errors) == errors
    card = render_dataset_card(make_manifest(errors_by_kind=errors))
    assert "| unsupported_geo_mask | 2 |" in card.split("## Not turned into rows", 1)[1]
    record = {
        "mode": "full",
        "created": True,
        "version_id": "v000001",
        "current_version_id": "v000001",
        "rows_exported": 1,
        "errors_by_kind": errors,
    }
    assert "**Not turned into rows: 2**" in summary_markdown("ds", "/tmp/store", record, {})
