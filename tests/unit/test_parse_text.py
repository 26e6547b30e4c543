"""Text, document and conversational objects: offsets, covered text, pages, tokens."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from labelhaul.emulator.media import document, text
from labelhaul.emulator.synthetic import SyntheticSpec, build_row
from labelhaul.parse_text import page_offset
from labelhaul.rows import ParsedRow, parse_export_line


def _spec(*kinds: str) -> SyntheticSpec:
    return SyntheticSpec.make(
        n_rows=12, instances=2, seed=5, width=64, height=48, number=1, media=kinds
    )


def _parse(export: dict[str, Any]) -> ParsedRow:
    parsed = parse_export_line(orjson.dumps(export), 0)
    assert isinstance(parsed, ParsedRow)
    return parsed


def _objects(export: dict[str, Any]) -> list[dict[str, Any]]:
    label = next(iter(export["projects"].values()))["labels"][0]
    objects: list[dict[str, Any]] = label["annotations"]["objects"]
    return objects


def _by_kind(parsed: ParsedRow, kind: str) -> list[dict[str, Any]]:
    return [r for r in parsed.tables["annotations"] if r["annotation_kind"] == kind]


@pytest.mark.parametrize("row", [0, 1])  # row 0: text inline; row 1: a URL to it
def test_text_entities_land_with_offsets_and_the_covered_text(row: int) -> None:
    spec = _spec("text")
    export = build_row(spec, row)
    parsed = _parse(export)
    assert parsed.errors == []
    body = text.text_of(spec, row)
    inline = export["data_row"]["row_data"] == body
    assert inline == (row == 0)
    entities = _by_kind(parsed, "TextEntity")
    expected = text.entity_spans(spec, row, body)
    assert [(r["text_start"], r["text_end"], r["name"]) for r in entities] == expected
    if inline:
        # Code point offsets: the word with a non-BMP character is sliced whole.
        assert [r["text"] for r in entities] == [body[s:e] for s, e, _ in expected]
        assert "caf\u00e9\U0001f600" in [r["text"] for r in entities]
    else:
        # A URL row exports no token: the fetched file fills it (tests/unit/test_row_content).
        assert [r["text"] for r in entities] == [None] * len(expected)
    assert all(r["valid"] and r["image_width"] is None for r in entities)
    (rel,) = parsed.tables["relationships"]
    assert rel["annotation_kind"] == "TextUnidirectionalRelationship" and rel["valid"]
    assert (rel["source_feature_id"], rel["target_feature_id"]) == (
        entities[0]["feature_id"],
        entities[1]["feature_id"],
    )


def test_without_a_token_the_inline_text_gives_the_covered_text() -> None:
    spec = _spec("text")
    export = build_row(spec, 0)
    for obj in _objects(export):
        del obj["location"]["token"]
    parsed = _parse(export)
    body = text.text_of(spec, 0)
    assert [r["text"] for r in _by_kind(parsed, "TextEntity")] == [
        body[s:e] for s, e, _ in text.entity_spans(spec, 0, body)
    ]
    url_row = build_row(spec, 1)
    assert all("token" not in obj["location"] for obj in _objects(url_row))
    assert {r["text"] for r in _by_kind(_parse(url_row), "TextEntity")} == {None}


def test_a_token_that_is_not_the_text_at_its_offsets_is_a_warning() -> None:
    export = build_row(_spec("text"), 0)
    _objects(export)[0]["location"]["token"] = "something else"
    parsed = _parse(export)
    (err,) = parsed.errors
    assert err.kind == "text_token_mismatch" and err.severity == "warning"
    assert err.feature_id == _objects(export)[0]["feature_id"]
    assert err.extra["path"] == "location.token" and "something else" in err.extra["raw"]


@pytest.mark.parametrize(
    "location, kind",
    [
        ({"start": 5, "end": 2}, "bad_text_offsets"),
        ({"start": -1, "end": 2}, "bad_text_offsets"),
        ({"start": "3", "end": 9}, "bad_text_offsets"),
        ({"start": 0, "end": 10_000}, "bad_text_offsets"),
        ({"end": 4}, "missing_geometry"),
        (None, "missing_geometry"),
    ],
)
def test_bad_offsets_keep_the_entity_with_its_raw_json(location: Any, kind: str) -> None:
    export = build_row(_spec("text"), 0)
    obj = _objects(export)[1]
    if location is None:
        del obj["location"]
    else:
        obj["location"] = location
    parsed = _parse(export)
    (rec,) = [r for r in parsed.tables["annotations"] if r["feature_id"] == obj["feature_id"]]
    assert not rec["valid"] and rec["error_kind"] == kind
    assert orjson.loads(rec["raw_json"]) == obj
    assert [e.kind for e in parsed.errors] == [kind]
    assert parsed.errors[0].feature_id == obj["feature_id"]
    assert parsed.errors[0].label_id is not None
    # The other entities still land.
    assert sum(r["valid"] for r in _by_kind(parsed, "TextEntity")) == 2


@pytest.mark.parametrize("row", [0, 2])  # row 2 numbers its pages from 0
def test_document_boxes_and_token_groups_land_per_page(row: int) -> None:
    spec = _spec("document")
    export = build_row(spec, row)
    assert document.zero_based(spec, row) == (row == 2)
    parsed = _parse(export)
    assert parsed.errors == []
    boxes = _by_kind(parsed, "DocumentBoundingBox")
    assert [b["page_number"] for b in boxes] == [1, 2]  # 1-based whatever the export says
    assert (boxes[0]["page_width"], boxes[0]["page_height"]) == (612.0, 792.0)
    assert boxes[1]["page_width"] is None  # no page_dimensions exported
    src = _objects(export)[0]["bounding_box"]
    assert (boxes[0]["bbox_left"], boxes[0]["bbox_top"]) == (src["left"], src["top"])
    tokens = _by_kind(parsed, "DocumentEntityToken")
    groups = [g for o in _objects(export) if "location" in o for g in o["location"]["groups"]]
    assert [(t["token_group_id"], t["token_ids"], t["text"]) for t in tokens] == [
        (g["id"], g["tokens"], g["text"]) for g in groups
    ]
    assert [t["page_number"] for t in tokens] == [1, 2, 1]
    # The entity over a page break: two records of one feature.
    assert tokens[0]["feature_id"] == tokens[1]["feature_id"] != tokens[2]["feature_id"]


def test_page_offset_reads_the_whole_label() -> None:
    assert page_offset([{"page_number": 1}, {"page_number": 2}]) == 0
    assert page_offset([{"page_number": 3}, {"page_number": 0}]) == 1
    assert page_offset([{"location": {"groups": [{"page_number": 0}]}}]) == 1
    assert page_offset([{"page_number": False}, "junk", {"location": "x"}]) == 0


def test_a_document_box_without_a_page_or_with_a_bad_one_is_kept_invalid() -> None:
    export = build_row(_spec("document"), 0)
    objects = _objects(export)
    del objects[0]["page_number"]
    objects[1]["page_number"] = "two"
    objects[3]["location"] = {"groups": []}
    parsed = _parse(export)
    kinds = sorted(e.kind for e in parsed.errors)
    assert kinds == ["bad_page_number", "missing_geometry", "missing_geometry"]
    bad = [r for r in parsed.tables["annotations"] if not r["valid"]]
    assert len(bad) == 3 and all(r["raw_json"] for r in bad)


def test_conversational_entities_carry_message_and_offsets() -> None:
    spec = _spec("conversational")
    export = build_row(spec, 0)
    parsed = _parse(export)
    entities = _by_kind(parsed, "ConversationalTextEntity")
    src = [o["conversational_location"] for o in _objects(export)]
    assert [(r["message_id"], r["text_start"], r["text_end"]) for r in entities] == [
        (s["message_id"], s["location"]["start"], s["location"]["end"]) for s in src
    ]
    assert all(r["valid"] and r["text"] is None for r in entities)
    assert [r["valid"] for r in parsed.tables["relationships"]] == [True]


def test_a_revision_changes_each_text_kind() -> None:
    from datetime import UTC, datetime

    from labelhaul.emulator.synthetic import SyntheticSource

    spec = _spec("text", "document", "conversational")
    source = SyntheticSource(spec)
    before = [copy.deepcopy(source.row(i)) for i in range(3)]
    source.edit_rows([0, 1, 2], datetime(2025, 1, 1, tzinfo=UTC))
    for i in range(3):
        assert _objects(source.row(i)) != _objects(before[i])
    parsed = _parse(source.row(0))
    assert parsed.errors == []  # the shortened token still matches the text
