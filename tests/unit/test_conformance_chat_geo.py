"""Every leaf of LLM, multimodal chat and geospatial rows lands in a column or an error record.

The same idea as tests/conformance.py's walker (#16), by value: each scalar leaf of the
export row (and of the documented samples in labelhaul's seed of Labelbox's docs shapes)
must equal a value in some column of some table record, a leaf of a JSON text column
(`raw_json`, `geometry_geojson`, `row_data`, ...), or a leaf of an error record's raw JSON.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pytest

from labelhaul.emulator.synthetic import SyntheticSpec, build_row
from labelhaul.rows import ParsedRow, parse_export_line

# Leaves that land in no column on purpose, by path suffix, and why.
IMPLIED = {
    "message_evaluation_task.format": "annotation_kind says it (MessageRanking: message-ranking)",
}


def _leaves(v: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(v, dict):
        for k, x in v.items():
            yield from _leaves(x, f"{path}.{k}" if path else str(k))
    elif isinstance(v, list):
        for x in v:
            yield from _leaves(x, f"{path}[]")
    elif v is not None and not isinstance(v, bool):
        yield path, v


def _key(v: Any) -> Any:
    if isinstance(v, int | float) and not isinstance(v, bool):
        # float32 precision: embeddings are stored as float32
        return ("n", float(np.float32(v)))
    return ("s", str(v))


def _landed(parsed: ParsedRow) -> set[Any]:
    seen: set[Any] = set()

    def add(v: Any) -> None:
        if isinstance(v, bytes):
            return
        if isinstance(v, str) and v[:1] in "[{":
            try:
                decoded = orjson.loads(v)
            except orjson.JSONDecodeError:
                decoded = None
            if decoded is not None:
                for _, leaf in _leaves(decoded):
                    add(leaf)
        if isinstance(v, dict | list):
            for _, leaf in _leaves(v):
                add(leaf)
            return
        if v is not None and not isinstance(v, bool):
            seen.add(_key(v))

    for records in parsed.tables.values():
        for rec in records:
            for value in rec.values():
                add(value)
    for err in parsed.errors:
        for value in err.extra.values():
            add(value)
    return seen


def _missing(row: dict[str, Any], parsed: ParsedRow) -> list[str]:
    landed = _landed(parsed)
    label_part = next(iter(row["projects"].values()))
    lost = []
    for path, value in _leaves(label_part, "projects.*"):
        if any(path.endswith(s) for s in IMPLIED):
            continue
        if _key(value) not in landed:
            lost.append(f"{path} = {value!r}")
    for path, value in _leaves({k: v for k, v in row.items() if k != "projects"}):
        if _key(value) not in landed:
            lost.append(f"{path} = {value!r}")
    return lost


@pytest.mark.parametrize("kind", ["llm", "mmc", "geospatial"])
def test_every_leaf_of_synthetic_rows_lands(kind: str) -> None:
    spec = SyntheticSpec.make(n_rows=4, instances=2, seed=1, width=32, height=32, media=[kind])
    for r in range(4):
        row = build_row(spec, r)
        parsed = parse_export_line(orjson.dumps(row), 0, source_id=spec.project_id)
        assert isinstance(parsed, ParsedRow)
        assert _missing(row, parsed) == []


def test_the_walk_fails_when_a_leaf_is_lost() -> None:
    spec = SyntheticSpec.make(n_rows=1, instances=2, seed=1, width=32, height=32, media=["mmc"])
    row = build_row(spec, 0)
    parsed = parse_export_line(orjson.dumps(row), 0, source_id=spec.project_id)
    assert isinstance(parsed, ParsedRow)
    mangled = copy.deepcopy(parsed)
    for rec in mangled.tables["annotations"]:
        rec["model_config_name"] = None
    assert any("model_config_name" in m for m in _missing(row, mangled))


# Labelbox's documented shapes (docs.labelbox.com, /work/shared/formats excerpts), wrapped in
# a minimal export line.
_GEO_BOX = {
    "feature_id": "cldnfc61v028y13yd41qozic7",
    "name": "bbox_geo",
    "annotation_kind": "GeoBoundingBox",
    "classifications": [],
    "geojson": {
        "type": "Polygon",
        "coordinates": [
            [
                [-58.64355672718979, -34.47613968717428],
                [-58.64355672718979, -34.44613181682816],
                [-58.58743082163835, -34.44613181682816],
                [-58.58743082163835, -34.47613968717428],
                [-58.64355672718979, -34.47613968717428],
            ]
        ],
    },
}
_PREFERENCE = [
    {
        "feature_id": "clp8gzc7a000h07iu2uqcfziq",
        "feature_schema_id": "clp8fepqc02nd071phl4tck59",
        "name": "Choose the best response",
        "radio_answer": {
            "feature_id": "clp8gzc7a000i07iu46z39uwl",
            "feature_schema_id": "clp8fepqc02ng071p9ufm76xj",
            "name": "Response B",
            "classifications": [],
        },
    },
    {
        "feature_id": "clph8rvw700013b6pbsq1lwcg",
        "feature_schema_id": "clp8fepqc02nl071p8z948pd4",
        "name": "Provide a reason for your choice",
        "text_answer": {"content": "Clear recommendation"},
    },
]


@pytest.mark.parametrize(
    ("objects", "classifications"), [([_GEO_BOX], []), ([], _PREFERENCE)], ids=["geo", "llm"]
)
def test_every_leaf_of_documented_samples_lands(
    objects: list[dict[str, Any]], classifications: list[dict[str, Any]]
) -> None:
    row = {
        "data_row": {"id": "cdr1", "row_data": "https://example.com/x.json"},
        "projects": {
            "cproj": {
                "name": "p",
                "labels": [
                    {
                        "id": "clabel1",
                        "annotations": {
                            "objects": objects,
                            "classifications": classifications,
                            "relationships": [],
                        },
                    }
                ],
            }
        },
    }
    parsed = parse_export_line(orjson.dumps(row), 0)
    assert isinstance(parsed, ParsedRow)
    assert parsed.errors == []
    assert _missing(row, parsed) == []
