"""LLM preference, multimodal chat and geospatial rows: generated, parsed, paired (#16 D)."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

import orjson
import pytest

from labelhaul.emulator.media import geospatial, llm, mmc
from labelhaul.emulator.synthetic import SyntheticSource, SyntheticSpec, build_row
from labelhaul.parse_geo import crs_name, tile_layer, to_wkb
from labelhaul.preference import write_preference
from labelhaul.rows import ParsedRow, parse_data_row, parse_export_line

KINDS = ("llm", "mmc", "geospatial")


def _spec(media: tuple[str, ...] = KINDS, n: int = 6) -> SyntheticSpec:
    return SyntheticSpec.make(n_rows=n, instances=2, seed=3, width=64, height=48, media=media)


def _parse(row: dict[str, Any], source_id: str | None = None) -> ParsedRow:
    parsed = parse_export_line(orjson.dumps(row), 0, source_id=source_id)
    assert isinstance(parsed, ParsedRow)
    return parsed


# -- geospatial ------------------------------------------------------------------------------


def test_wkb_is_the_iso_encoding() -> None:
    # The OGC spec's example: POINT(1 2), little-endian.
    assert to_wkb("Point", [[(1.0, 2.0)]]).hex() == "0101000000000000000000f03f0000000000000040"
    line = to_wkb("LineString", [[(0.0, 0.0), (1.0, 1.0)]])
    assert struct.unpack("<BII", line[:9]) == (1, 2, 2)
    assert struct.unpack("<4d", line[9:]) == (0.0, 0.0, 1.0, 1.0)
    poly = to_wkb("Polygon", [[(0, 0), (0, 1), (1, 1), (0, 0)]])
    assert struct.unpack("<BIII", poly[:13]) == (1, 3, 1, 4)
    assert len(poly) == 13 + 4 * 16


def test_tile_layer_and_crs_names() -> None:
    layer = {"tile_layer_url": "https://t/{z}/{x}/{y}.png", "bounds": [[1, 2], [3, 4]]}
    assert tile_layer(json.dumps({**layer, "epsg": "EPSG3857"})) == ("[[1,2],[3,4]]", "EPSG:3857")
    assert tile_layer({**layer, "epsg": "Simple"})[1] == "simple"
    assert tile_layer("https://storage.labelbox.com/x.png") == (None, None)
    assert tile_layer('{"not": "a layer"}') == (None, None)
    assert crs_name("EPSG:4326") == "EPSG:4326"


def _wkb_points(wkb: bytes) -> list[tuple[float, float]]:
    """Decode the vertices of a WKB Point/LineString/single-ring Polygon (test oracle)."""
    _, gtype = struct.unpack("<BI", wkb[:5])
    if gtype == 1:
        return [struct.unpack("<2d", wkb[5:21])]
    offset = 5 if gtype == 2 else 9
    (n,) = struct.unpack("<I", wkb[offset : offset + 4])
    body = wkb[offset + 4 :]
    return [struct.unpack("<2d", body[i * 16 : i * 16 + 16]) for i in range(n)]


def test_geospatial_rows_land_geometry_crs_and_bounds() -> None:
    spec = _spec(("geospatial",), n=2)
    for r in range(2):
        row = build_row(spec, r)
        parsed = _parse(row, spec.project_id)
        assert parsed.errors == []
        (dr,) = parsed.tables["data_rows"]
        assert json.loads(dr["tile_bounds"]) == geospatial.bounds_of(spec, r)
        assert dr["tile_crs"] == crs_name(geospatial.EPSGS[r % 2])
        objs = row["projects"][spec.project_id]["labels"][0]["annotations"]["objects"]
        ann = {a["annotation_kind"]: a for a in parsed.tables["annotations"]}
        assert set(ann) == {"GeoBoundingBox", "GeoPoint", "GeoPolyline", "GeoPolygon"}
        for obj in objs:
            rec = ann[obj["annotation_kind"]]
            assert rec["valid"] and rec["crs"] == "EPSG:4326"
            assert json.loads(rec["geometry_geojson"]) == obj["geojson"]
            coords = obj["geojson"]["coordinates"]
            flat = (
                [coords]
                if obj["geojson"]["type"] == "Point"
                else coords[0]
                if obj["geojson"]["type"] == "Polygon"
                else coords
            )
            assert _wkb_points(rec["geometry_wkb"]) == [tuple(p) for p in flat]
        # The nested answer keeps the object's ids.
        (cls,) = parsed.tables["classifications"]
        assert cls["object_feature_id"] == ann["GeoBoundingBox"]["feature_id"]


@pytest.mark.parametrize(
    ("geojson", "kind"),
    [
        (None, "missing_geometry"),
        ({"type": "Point", "coordinates": [1.0, 2.0]}, "missing_geometry"),  # wrong type
        ({"type": "Polygon", "coordinates": [[[0, 0], [1, "x"]]]}, "missing_geometry"),
        ({"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [0, 0]]]}, "too_few_points"),
        ({"type": "Polygon", "coordinates": [[[0, 0], [1, math.inf], [1, 0], [0, 0]]]}, None),
    ],
)
def test_bad_geo_geometry_is_kept_with_an_error(geojson: Any, kind: str | None) -> None:
    spec = _spec(("geospatial",), n=1)
    row = build_row(spec, 0)
    obj = row["projects"][spec.project_id]["labels"][0]["annotations"]["objects"][0]
    if geojson is None:
        del obj["geojson"]
    else:
        obj["geojson"] = geojson
    parsed = parse_data_row(row, 0)  # not via JSON: JSON has no infinity
    rec = next(a for a in parsed.tables["annotations"] if a["feature_id"] == obj["feature_id"])
    expected = kind or "non_finite_coordinates"
    assert rec["valid"] is False and rec["error_kind"] == expected
    assert rec["geometry_wkb"] is None and rec["raw_json"]
    (err,) = parsed.errors
    assert (err.kind, err.feature_id, err.label_id) == (
        expected,
        obj["feature_id"],
        spec.id("lb", 0),
    )


# -- multimodal chat -------------------------------------------------------------------------


def test_mmc_selections_and_rankings_are_rows_per_message() -> None:
    spec = _spec(("mmc",), n=3)
    for r in range(3):
        parsed = _parse(build_row(spec, r), spec.project_id)
        ranking = mmc.ranking_of(spec, r)
        parent = mmc.prompt_message_id(spec, r)
        ann = parsed.tables["annotations"]
        by_kind: dict[str, list[dict[str, Any]]] = {}
        for a in ann:
            by_kind.setdefault(a["annotation_kind"], []).append(a)
        assert all(a["valid"] and a["parent_message_id"] == parent for a in ann)
        (single,) = by_kind["MessageSingleSelection"]
        assert single["message_id"] == mmc.response_message_id(spec, r, ranking[0])
        assert single["model_config_name"] == mmc.MODELS[ranking[0]]
        multi = by_kind["MessageMultiSelection"]
        assert sorted(m["model_config_name"] for m in multi) == sorted(
            mmc.MODELS[n] for n in ranking[:2]
        )
        ranks = {a["model_config_name"]: a["rank"] for a in by_kind["MessageRanking"]}
        assert ranks == {mmc.MODELS[n]: i + 1 for i, n in enumerate(ranking)}
        assert {a["feature_id"] for a in by_kind["MessageRanking"]} == {spec.id("mt", r, 2)}


def test_a_ranking_with_a_gap_is_marked_invalid() -> None:
    spec = _spec(("mmc",), n=1)
    row = build_row(spec, 0)
    ranking = row["projects"][spec.project_id]["labels"][0]["annotations"]["objects"][2]
    mmc.ranked_messages(ranking)[0]["order"] = 7
    parsed = _parse(row)
    rows = [a for a in parsed.tables["annotations"] if a["annotation_kind"] == "MessageRanking"]
    assert len(rows) == 3 and all(a["error_kind"] == "bad_ranking" for a in rows)
    assert [e.kind for e in parsed.errors if e.kind == "bad_ranking"] == ["bad_ranking"]


def test_conversation_in_row_data_lands_as_messages() -> None:
    spec = _spec(("llm",), n=1)
    row = build_row(spec, 0)
    conv = {
        "type": "application/vnd.labelbox.conversational",
        "version": 1,
        "messages": [
            {"messageId": "m0", "content": "Hi", "user": {"userId": "u1", "name": "User"}},
            {"messageId": "m1", "content": "Explain tea", "user": {"userId": "u1"}},
        ],
        "modelOutputs": [
            {"title": "Response A", "content": "Tea is a drink", "modelConfigName": "gpt"},
            {"title": "Response B", "content": "Leaves", "modelConfigName": "llama"},
        ],
    }
    row["data_row"]["row_data"] = json.dumps(conv)
    msgs = _parse(row).tables["messages"]
    assert [(m["message_id"], m["parent_message_id"], m["role"]) for m in msgs] == [
        ("m0", None, "human"),
        ("m1", "m0", "human"),
        ("Response A", "m1", "model"),
        ("Response B", "m1", "model"),
    ]
    assert msgs[3]["model_name"] == "llama" and msgs[3]["content"] == "Leaves"
    v2 = {
        "type": "application/vnd.labelbox.conversational.model-chat-evaluation",
        "version": 2,
        "actors": {
            "h": {"role": "human", "metadata": {"name": "User"}},
            "a": {"role": "model", "metadata": {"modelConfigName": "m-alpha"}},
        },
        "messages": {
            "p": {
                "actorId": "h",
                "content": [{"type": "text", "content": "Q?"}],
                "childMessageIds": ["r"],
            },
            "r": {"actorId": "a", "content": [{"type": "text", "content": "A."}]},
        },
        "rootMessageIds": ["p"],
    }
    row["data_row"]["row_data"] = json.dumps(v2)
    msgs = _parse(row).tables["messages"]
    assert [
        (m["message_id"], m["parent_message_id"], m["role"], m["model_name"], m["content"])
        for m in msgs
    ] == [("p", None, "human", None, "Q?"), ("r", "p", "model", "m-alpha", "A.")]
    # A URL (what Labelbox usually exports) fetches nothing and lands no messages.
    assert _parse(build_row(spec, 0)).tables["messages"] == []


# -- LLM preference pairs --------------------------------------------------------------------


def _classifications(spec: SyntheticSpec) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for r in range(spec.n_rows):
        records += _parse(build_row(spec, r), spec.project_id).tables["classifications"]
    return records


def test_preference_pairs_are_built_from_the_radio_and_the_responses(tmp_path: Path) -> None:
    spec = _spec(("llm",), n=5)
    path = tmp_path / "pairs.jsonl"
    summary = write_preference(path, _classifications(spec))
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    # Rows 0, 2, 4 hold the prompt and responses as answers; rows 1 and 3 only the radio
    # (their pairs come from the conversation: tests/unit/test_row_content.py).
    assert summary.pairs == 3 and summary.labels == 5
    assert summary.skipped == {"no_conversation": 2}
    for r, line in zip((0, 2, 4), lines, strict=True):
        chosen = llm.chosen_of(spec, r)
        assert line["prompt"] == llm.prompt_of(spec, r)
        assert line["chosen"] == llm.response_of(spec, r, chosen)
        assert line["rejected"] == llm.response_of(spec, r, 1 - chosen)
        assert line["data_row_id"] == spec.data_row_id(r)
        assert line["label_id"] == spec.id("lb", r)
        assert line["reason"].startswith(llm.RESPONSES[chosen])
    # Deterministic: the same records give the same bytes.
    again = tmp_path / "again.jsonl"
    write_preference(again, _classifications(spec))
    assert again.read_bytes() == path.read_bytes()


def test_labels_without_a_prompt_or_another_response_are_counted(tmp_path: Path) -> None:
    spec = _spec(("llm",), n=3)  # rows 0 and 2 carry the prompt and responses as answers
    records = [r for r in _classifications(spec) if r["data_row_id"] != spec.data_row_id(1)]
    row0, row1 = spec.data_row_id(0), spec.data_row_id(2)
    records = [
        r
        for r in records
        if not (r["data_row_id"] == row0 and r["question_name"] == llm.PROMPT_QUESTION)
        and not (
            r["data_row_id"] == row1
            and r["question_name"] in llm.RESPONSES
            and r["question_name"] != r["answer_name"]
            and r["answer_kind"] == "text"
            and r["question_name"] != llm.RESPONSES[llm.chosen_of(spec, 2)]
        )
    ]
    summary = write_preference(tmp_path / "p.jsonl", records)
    assert summary.pairs == 0 and summary.labels == 2
    assert summary.skipped == {"no_prompt": 1, "no_other_response": 1}


def test_edits_change_every_kind(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    spec = _spec(KINDS, n=3)
    src = SyntheticSource(spec)
    before = [src.row(r) for r in range(3)]
    src.edit_rows(range(3), datetime(2025, 1, 1, tzinfo=UTC))
    after = [src.row(r) for r in range(3)]
    for b, a in zip(before, after, strict=True):
        pb = spec.project_id
        ab = b["projects"][pb]["labels"][0]["annotations"]
        aa = a["projects"][pb]["labels"][0]["annotations"]
        assert ab != aa, spec.media_of(int(b["data_row"]["id"][-14:-5]))


def test_wkb_survives_staging_and_assembly(tmp_path: Path) -> None:
    # Staged parts are NDJSON: a bytes column (geometry_wkb) once failed the stage with
    # "Type is not JSON serializable: bytes".
    import pyarrow.parquet as pq

    from labelhaul.pipeline import assemble_version, stage_export

    spec = _spec(("geospatial",), n=2)
    rows = [build_row(spec, r) for r in range(2)]
    lines, offset = [], 0
    for row in rows:
        line = orjson.dumps(row)
        lines.append((offset, line))
        offset += len(line) + 1
    summary = stage_export(lines, tmp_path, source_id=spec.project_id)
    version = assemble_version(tmp_path, summary.parts)
    ann = pq.read_table(version.tables["annotations"]).to_pylist()
    expected = [
        a["geometry_wkb"]
        for row in rows
        for a in _parse(row, spec.project_id).tables["annotations"]
    ]
    assert [a["geometry_wkb"] for a in ann] == expected and all(expected)


def test_dataset_card_describes_the_preference_pairs() -> None:
    from labelhaul.store import render_dataset_card
    from tests.helpers import make_manifest

    facts = {"format": "trl", "pairs": 7, "labels": 8, "skipped": {"no_prompt": 1}}
    card = render_dataset_card(make_manifest(preference=facts))
    assert "## Training outputs (LLM preference pairs)" in card
    assert "7 pairs from 8 labels" in card and "no_prompt 1" in card
    assert "LLM preference" not in render_dataset_card(make_manifest())
