"""The conformance walk (tests/conformance.py) over every sample and every synthetic media kind.

Every leaf under a label's annotations must land in a row (by an explicit per-key rule, in
its own feature's row) or inside raw JSON an error record or a `raw_json` column keeps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest

from labelhaul import seed
from labelhaul.emulator.synthetic import MEDIA_KINDS, SyntheticSpec, build_row
from labelhaul.rows import ParsedRow, parse_export_line
from tests import media_samples as media
from tests.conformance import RULES, frame_context, normalise, walk


def _parse(export: dict[str, Any]) -> ParsedRow:
    parsed = parse_export_line(orjson.dumps(export), 0)
    assert isinstance(parsed, ParsedRow)
    return parsed


def _seed_samples() -> dict[str, Callable[[], dict[str, Any]]]:
    """The seed's image formats: each per-kind example in an image row, and the two exports."""
    out: dict[str, Callable[[], dict[str, Any]]] = {
        "seed-project-export": seed.sample_project_export,
        "seed-model-run-export": seed.sample_model_run_export,
    }
    for title, obj in seed.seed_objects():
        if title in (seed.PROJECT_EXPORT_TITLE, seed.MODEL_RUN_EXPORT_TITLE):
            continue
        key = "classifications" if title.startswith("Classification") else "objects"
        if title == "Relationship":
            key = "relationships"
        out[f"seed-{title}"] = lambda obj=obj, key=key: media.wrap({key: [obj]}, "image")
    return out


SAMPLES: dict[str, Callable[[], dict[str, Any]]] = {
    **{f"formats-{k}": (lambda v=v: v) for k, v in media.format_samples().items()},
    **_seed_samples(),
    "issue-video-box-3-key-frames": media.video_row,
    "issue-dicom-polyline": media.dicom_row,
    # Folded in from #16 C's and D's own walks: two token groups on two pages; a GeoJSON box.
    "sdk-document-entity-token": media.document_tokens_row,
    "docs-geo-bounding-box": media.geo_box_row,
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_leaf_of_every_sample_lands(name: str) -> None:
    export = SAMPLES[name]()
    parsed = _parse(export)
    report = walk(export, parsed)
    assert report.unlanded == []
    assert report.total >= 5  # the walk really visited the sample's annotations
    if name not in BAD_ON_PURPOSE:
        # Every kind is parsed now: a documented sample lands in columns, none kept raw.
        assert (report.kept_raw, parsed.errors) == (0, [])


# The seed's examples labelhaul rejects (too few polygon points, a relationship to an object
# of no label here): error records with their raw JSON, as tests/unit/test_rows.py expects.
BAD_ON_PURPOSE = {"seed-Polygon", "seed-Relationship"}


@pytest.mark.parametrize("kind", MEDIA_KINDS)
@pytest.mark.parametrize("legacy", [False, True])
def test_every_leaf_of_a_synthetic_project_of_each_media_kind_lands(
    kind: str, legacy: bool
) -> None:
    spec = SyntheticSpec.make(
        n_rows=8, instances=3, seed=5, width=48, height=32, media=[kind], legacy=legacy
    )
    visited = 0
    for row in range(spec.n_rows):
        export = build_row(spec, row)
        report = walk(export, _parse(export))
        assert report.unlanded == [], f"row {row}"
        visited += report.total
    assert visited > 8 * 5


def test_a_leaf_the_parser_forgets_is_reported() -> None:
    export = seed.sample_project_export()
    parsed = _parse(export)
    assert walk(export, parsed).unlanded == []
    box = next(
        r for r in parsed.tables["annotations"] if r["annotation_kind"] == "ImageBoundingBox"
    )
    box["bbox_top"] = None
    [missing] = walk(export, parsed).unlanded
    assert ".bounding_box.top=" in missing and box["feature_id"] in missing


def test_a_value_in_another_features_row_does_not_count() -> None:
    a = {"feature_id": "cfa", "name": "n", "radio_answer": {"feature_id": "cfa1", "name": "x"}}
    b = {"feature_id": "cfb", "name": "n", "radio_answer": {"feature_id": "cfb1", "name": "y"}}
    export = media.wrap({"classifications": [a, b]}, "image")
    parsed = _parse(export)
    rows = parsed.tables["classifications"]
    rows[1]["answer_name"] = rows[0]["answer_name"] = "x"  # "y" vanished; "x" is still there
    [missing] = walk(export, parsed).unlanded
    assert "radio_answer.name='y'" in missing


def test_raw_json_counts_only_where_it_is_the_whole_node() -> None:
    export = media.video_row()
    clouds = {"c1": {"x": 1.5, "y": 2.5}, "c2": {"x": 3.5, "y": 4.5}}
    export["projects"][media.PROJECT_ID]["labels"][0]["annotations"]["point_clouds"] = clouds
    parsed = _parse(export)
    assert walk(export, parsed).unlanded == []
    [err] = parsed.errors
    raw = orjson.loads(err.extra["raw"])
    del raw["c2"]  # an error that kept only part of the node
    parsed.errors[0] = type(err)(
        **{**err.to_dict(), "extra": {**err.extra, "raw": orjson.dumps(raw).decode()}}
    )
    assert len(walk(export, parsed).unlanded) == 4  # all of the node's leaves: none is kept
    parsed.errors.clear()
    assert len(walk(export, parsed).unlanded) == 4  # without the error: nothing lands


def test_a_frames_value_in_another_frames_row_does_not_count() -> None:
    export = media.video_row()
    parsed = _parse(export)
    assert walk(export, parsed).unlanded == []
    rows = {r["frame"]: r for r in parsed.tables["annotations"] if r["feature_id"] == media.BOX_ID}
    rows[5]["bbox_left"] = rows[1]["bbox_left"]  # frame 5's left vanished; frame 1's is there
    [missing] = walk(export, parsed).unlanded
    assert ".frames.5.objects." in missing and "bounding_box.left" in missing


def test_a_lost_segment_bound_or_key_frame_is_reported() -> None:
    export = media.video_row()
    parsed = _parse(export)
    rows = {r["frame"]: r for r in parsed.tables["annotations"] if r["feature_id"] == media.BOX_ID}
    rows[9]["segment_index"] = None  # the segment's end frame is no longer in the segment
    rows[5]["keyframe"] = None
    missing = walk(export, parsed).unlanded
    assert any(".segments." in m and "[0][1]=9" in m for m in missing)
    assert any("key_frame_feature_map" in m and ".5=True" in m for m in missing)


def test_a_dicom_value_on_another_plane_does_not_count() -> None:
    export = media.dicom_row()
    parsed = _parse(export)
    assert walk(export, parsed).unlanded == []
    for row in parsed.tables["annotations"]:
        row["plane"] = "Sagittal"
    assert len(walk(export, parsed).unlanded) > 5


def test_a_document_page_and_a_geojson_coordinate_are_checked_exactly() -> None:
    doc = media.format_samples()["document-bbox"]
    parsed = _parse(doc)
    assert walk(doc, parsed).unlanded == []
    parsed.tables["annotations"][0]["page_number"] -= 1  # as exported, not 1-based
    assert any("page_number" in m for m in walk(doc, parsed).unlanded)
    spec = SyntheticSpec.make(
        n_rows=1, instances=2, seed=5, width=48, height=32, media=["geospatial"]
    )
    geo = build_row(spec, 0)
    parsed = _parse(geo)
    assert walk(geo, parsed).unlanded == []
    row = next(r for r in parsed.tables["annotations"] if r.get("geometry_geojson"))
    shape = orjson.loads(row["geometry_geojson"])
    shape["coordinates"][0] = [0.0, 0.0] if shape["type"] == "LineString" else [[0.0, 0.0]]
    row["geometry_geojson"] = orjson.dumps(shape).decode()
    assert any(".geojson.coordinates[0]" in m for m in walk(geo, parsed).unlanded)


def test_a_token_groups_or_a_ranked_messages_value_in_a_sibling_row_does_not_count() -> None:
    doc = media.document_tokens_row()
    parsed = _parse(doc)
    assert walk(doc, parsed).unlanded == []
    first, second = [r for r in parsed.tables["annotations"] if r["token_group_id"]]
    first["text"], second["text"] = second["text"], first["text"]
    assert len(walk(doc, parsed).unlanded) == 2  # each text is in the other group's row
    spec = SyntheticSpec.make(n_rows=4, instances=2, seed=1, width=32, height=32, media=["mmc"])
    rows = [build_row(spec, r) for r in range(spec.n_rows)]
    chat = next(r for r in rows if "MessageRanking" in orjson.dumps(r).decode())
    parsed = _parse(chat)
    assert walk(chat, parsed).unlanded == []
    ranked = [r for r in parsed.tables["annotations"] if r["annotation_kind"] == "MessageRanking"]
    ranked[0]["rank"], ranked[1]["rank"] = ranked[1]["rank"], ranked[0]["rank"]
    assert sum(".order=" in m for m in walk(chat, parsed).unlanded) == 2
    for row in ranked:
        row["model_config_name"] = None  # #16 D's own walk's negative case
    assert any("model_config_name" in m for m in walk(chat, parsed).unlanded)


def test_a_leaf_with_no_rule_is_reported_even_when_its_value_is_in_a_table() -> None:
    export = media.wrap(
        {
            "objects": [
                {
                    "feature_id": "cbox",
                    "name": "box",
                    "annotation_kind": "ImageBoundingBox",
                    "bounding_box": {"top": 1.0, "left": 2.0, "height": 3.0, "width": 4.0},
                    "extra_note": "box",  # the same value as `name`, under a key no rule maps
                }
            ]
        },
        "image",
    )
    [missing] = walk(export, _parse(export)).unlanded
    assert "extra_note" in missing and "no rule" in missing


def test_normalise() -> None:
    label = "projects.cp.labels[0].annotations"
    assert normalise(f"{label}.objects[3].bounding_box.top") == "OBJECT.bounding_box.top"
    assert normalise(f"{label}.objects[3].classifications[0].radio_answer.name") == (
        "CLS.radio_answer.name"
    )
    assert normalise(f"{label}.timestamp[1].timestamp.start") == "CLS.timestamp.start"
    assert normalise(f"{label}.segments.cfeat[2][1]") == "SEGMENTS[][1]"
    assert normalise(f"{label}.frames.7.objects.cbox.bounding_box.top") == "OBJECT.bounding_box.top"
    assert normalise(f"{label}.groups.Axial.frames.3.objects.cl.line[0].x") == "OBJECT.line[].x"
    assert normalise(f"{label}.groups.Axial.name") == "GROUP.name"
    assert normalise(f"{label}.key_frame_feature_map.cbox.Axial.3") == "KEYFRAME"
    assert normalise(f"{label}.segments.Axial.cl[0][1]") == "SEGMENTS[][1]"
    assert frame_context(f"{label}.key_frame_feature_map.cbox.Axial.3") == (3, "Axial")
    assert frame_context(f"{label}.frames.12.classifications[0].name") == (12, None)
    run = "experiments.ce.runs.cr.predictions[2].annotations"
    assert normalise(f"{run}.relationships[0].name") == "REL.name"
    assert all(r.table in ("annotations", "classifications", "relationships") for r in RULES)
