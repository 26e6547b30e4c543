"""Every leaf of text, document and conversational exports lands in a column or an error.

The same walk as tests/unit/test_conformance.py over Labelbox's documented shapes for these
media types (docs.labelbox.com "Export text / document / conversational text annotations",
written out here) and over synthetic rows of each kind. A leaf that lands in no column must
be in an error record's raw JSON (message-scoped conversational answers, parsed by #16 part
A, land there in this branch), never nowhere.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from labelhaul.rows import ParsedRow, parse_export_line
from labelhaul.urls import strip_signing
from tests.unit.test_conformance import (
    ALSO_IN,
    LEAF_COLUMNS,
    _column_values,
    _leaves,
    _normalise,
)

TEXT_LEAVES: dict[str, tuple[str, str]] = {
    **LEAF_COLUMNS,
    "OBJECT.location.start": ("annotations", "text_start"),
    "OBJECT.location.end": ("annotations", "text_end"),
    "OBJECT.location.token": ("annotations", "text"),
    "OBJECT.location.groups[].id": ("annotations", "token_group_id"),
    "OBJECT.location.groups[].page_number": ("annotations", "page_number"),
    "OBJECT.location.groups[].tokens[]": ("annotations", "token_ids"),
    "OBJECT.location.groups[].text": ("annotations", "text"),
    "OBJECT.page_number": ("annotations", "page_number"),
    "OBJECT.page_dimensions.width": ("annotations", "page_width"),
    "OBJECT.page_dimensions.height": ("annotations", "page_height"),
    "OBJECT.conversational_location.message_id": ("annotations", "message_id"),
    "OBJECT.conversational_location.location.start": ("annotations", "text_start"),
    "OBJECT.conversational_location.location.end": ("annotations", "text_end"),
    "OBJECT.unidirectional_relationship.source": ("relationships", "source_feature_id"),
    "OBJECT.unidirectional_relationship.target": ("relationships", "target_feature_id"),
    # Message-scoped answers, where part A of #16 lands them (until then: error records).
    "CLS.message_id": ("classifications", "message_id"),
    "CLS.conversational_text_answer.content": ("classifications", "text"),
    **{
        f"CLS.{ans}.{k}": ("classifications", f"answer_{col}")
        for ans in ("conversational_radio_answer", "conversational_checklist_answers[]")
        for k, col in (
            ("feature_id", "feature_id"),
            ("feature_schema_id", "schema_id"),
            ("name", "name"),
            ("value", "value"),
        )
    },
}
PAGE_PATHS = {"OBJECT.page_number", "OBJECT.location.groups[].page_number"}


def _row(annotation_objects: list[dict[str, Any]], row_data: str, mime: str) -> dict[str, Any]:
    return {
        "data_row": {"id": "cdoc0000000000000000000dr", "row_data": row_data},
        "media_attributes": {"mime_type": mime},
        "projects": {
            "cproj000000000000000000pj": {
                "name": "docs sample",
                "labels": [
                    {
                        "id": "clabel00000000000000000lb",
                        "annotations": {
                            "objects": annotation_objects,
                            "classifications": [],
                            "relationships": [],
                        },
                    }
                ],
            }
        },
    }


def documented_text() -> dict[str, Any]:
    """The documentation's TextEntity (with its token) on an inline text."""
    entity = {
        "feature_id": "clutx70x20onv148pb5ah49lb",
        "feature_schema_id": "clutx6n1g00r707y110ruh99w",
        "name": "named_entity",
        "value": "named_entity",
        "annotation_kind": "TextEntity",
        "classifications": [],
        "location": {"start": 10, "end": 20, "token": "um dolor si"},
    }
    return _row([entity], "https://storage.labelbox.com/sample.txt", "text/plain")


def documented_document() -> dict[str, Any]:
    """The documentation's DocumentBoundingBox (page 0) and the SDK's DocumentEntityToken."""
    box = {
        "feature_id": "cldnzepf100063b6jywag3r0e",
        "name": "bbox_document",
        "annotation_kind": "DocumentBoundingBox",
        "classifications": [],
        "page_number": 0,
        "bounding_box": {"top": 145.469, "left": 5.388, "height": 107.755, "width": 39.869},
    }
    tokens = {
        "feature_id": "cldnzepf100073b6jywag3r0f",
        "name": "named-entity",
        "value": "named_entity",
        "annotation_kind": "DocumentEntityToken",
        "classifications": [],
        "location": {
            "groups": [
                {
                    "id": "2f4336f4-a07e-4e0a-a9e1-5629b03b719b",
                    "page_number": 1,
                    "tokens": [
                        "3f984bf3-1d61-44f5-b59a-9658a2e3440f",
                        "3bf00b56-ff12-4e52-8cc1-08dbddb3c3b8",
                    ],
                    "text": "Metal-insulator (MI) transitions have been one of the",
                }
            ]
        },
    }
    return _row([box, tokens], "https://storage.labelbox.com/sample.pdf", "application/pdf")


def documented_conversation() -> dict[str, Any]:
    """The documentation's ConversationalTextEntity."""
    entity = {
        "feature_id": "cle6b4b0h00053b6j8eaxkbow",
        "name": "ner",
        "annotation_kind": "ConversationalTextEntity",
        "classifications": [],
        "conversational_location": {"message_id": "6", "location": {"start": 100, "end": 103}},
    }
    return _row([entity], "https://storage.labelbox.com/sample.json", "application/json")


def _synthetic(kind: str, row: int) -> dict[str, Any]:
    from labelhaul.emulator.synthetic import SyntheticSpec, build_row

    spec = SyntheticSpec.make(
        n_rows=9, instances=2, seed=3, width=64, height=48, number=1, media=[kind]
    )
    return build_row(spec, row)


SAMPLES = {
    "docs-text": documented_text,
    "docs-document": documented_document,
    "docs-conversational": documented_conversation,
    **{
        f"synthetic-{kind}-{row}": (lambda k=kind, r=row: _synthetic(k, r))
        for kind in ("text", "document", "conversational")
        for row in (0, 1, 2)
    },
}


def _in_errors(parsed: ParsedRow, value: Any) -> bool:
    needle = orjson.dumps(value).decode()
    return any(needle in str(e.extra.get("raw", "")) for e in parsed.errors)


@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_every_leaf_lands_in_a_column_or_an_error_record(sample: str) -> None:
    export = SAMPLES[sample]()
    parsed = parse_export_line(orjson.dumps(export), 0)
    assert isinstance(parsed, ParsedRow)
    # Only message-scoped answers (part A of #16) may be left to error records here.
    assert {e.kind for e in parsed.errors} <= {"unknown_classification"}
    assert not any(r["error_kind"] for r in parsed.tables["annotations"])
    missing: list[str] = []
    checked = 0
    for raw_path, value in _leaves(export, ""):
        path = _normalise(raw_path)
        if isinstance(value, list | dict) and not value:
            continue
        values: list[Any] = []
        if path in TEXT_LEAVES:
            table, column = TEXT_LEAVES[path]
            if column == "token_ids":
                values = [t for r in parsed.tables[table] for t in r.get(column) or ()]
            else:
                values = _column_values(parsed, table, column)
            if path in ALSO_IN:
                values += _column_values(parsed, *ALSO_IN[path])
        if path == "data_row.row_data":
            value = strip_signing(value)
        candidates = [value]
        if path == "embeddings[].values[].value[]":
            candidates.append(float(np.float32(value)))  # stored as float32, as models give
        if path in PAGE_PATHS:
            candidates.append(value + 1)  # a label numbering pages from 0 is shifted to 1
        ok = any(c in values for c in candidates) or _in_errors(parsed, value)
        checked += 1
        if not ok:
            missing.append(f"{raw_path}={value!r}")
    assert missing == []
    assert checked > 10


def test_message_scoped_answers_are_never_silently_dropped() -> None:
    parsed = parse_export_line(orjson.dumps(_synthetic("conversational", 0)), 0)
    assert isinstance(parsed, ParsedRow)
    scoped = [e for e in parsed.errors if "message_id" in str(e.extra.get("raw", ""))]
    # Answered for messages 0, 2, 4: each lands as a row (part A) or keeps its raw JSON.
    landed = [r for r in parsed.tables["classifications"] if r.get("message_id")]
    assert len(scoped) + len({r["question_feature_id"] for r in landed}) == 3
