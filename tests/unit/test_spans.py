"""The span JSONL: what spaCy-style NER training reads, from parsed text-like rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson

from labelhaul.emulator.media import text as text_media
from labelhaul.emulator.synthetic import SyntheticSpec, build_row
from labelhaul.rows import ParsedRow, parse_export_line
from labelhaul.spans import write_spans


def _tables(spec: SyntheticSpec) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {"data_rows": [], "annotations": []}
    for row in range(spec.n_rows):
        parsed = parse_export_line(orjson.dumps(build_row(spec, row)), 0)
        assert isinstance(parsed, ParsedRow)
        for name in out:
            out[name] += parsed.tables[name]
    return out


def _write(tmp_path: Path, tables: dict[str, list[dict[str, Any]]], **kw: Any) -> Any:
    path = tmp_path / "spans.jsonl"
    summary = write_spans(path, tables["data_rows"], tables["annotations"], **kw)
    return summary, path


def test_spans_index_the_text_and_carry_the_ids(tmp_path: Path) -> None:
    spec = SyntheticSpec.make(
        n_rows=12, instances=2, seed=9, width=64, height=48, media=["text", "document", "image"]
    )
    summary, path = _write(tmp_path, _tables(spec))
    lines = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]
    assert summary.lines == len(lines) and summary.spans == sum(len(x["spans"]) for x in lines)
    texts = [x for x in lines if x["media"] == "text"]
    docs = [x for x in lines if x["media"] == "document"]
    inline = [r for r in range(0, 12, 3) if text_media.is_inline(spec, r)]
    assert [x["data_row_id"] for x in texts] == [spec.data_row_id(r) for r in inline]
    for line, row in zip(texts, inline, strict=True):
        assert line["text"] == text_media.text_of(spec, row)
        assert line["label_id"] == spec.id("lb", row)
        assert line["global_key"] == spec.global_key(row)
        expected = sorted(text_media.entity_spans(spec, row, line["text"]))
        assert [(s["start"], s["end"], s["label"]) for s in line["spans"]] == expected
        assert all(s["feature_id"] for s in line["spans"])
    assert len(docs) == 4
    for line in docs:
        covered = [line["text"][s["start"] : s["end"]] for s in line["spans"]]
        assert "\n".join(covered) == line["text"] and len(covered) == 3
        assert {s["label"] for s in line["spans"]} == {"named_entity", "date"}
    # URL texts are counted, never silently missing; image rows add nothing.
    assert summary.skipped == {"text_not_in_export": 3 * (4 - len(inline))}


def test_the_file_is_deterministic_and_follows_the_label_policy(tmp_path: Path) -> None:
    spec = SyntheticSpec.make(n_rows=4, instances=2, seed=9, width=64, height=48, media=["text"])
    tables = _tables(spec)
    _, first = _write(tmp_path, tables)
    once = first.read_bytes()
    _, again = _write(tmp_path, tables)
    assert again.read_bytes() == once
    # A data row whose chosen label is another one contributes nothing from this label.
    summary, path = _write(tmp_path, tables, selected_labels={spec.data_row_id(0): "other"})
    assert summary.skipped["label_not_selected"] == 3
    assert spec.data_row_id(0) not in path.read_text()


def test_invalid_entities_are_left_out_and_counted(tmp_path: Path) -> None:
    spec = SyntheticSpec.make(n_rows=1, instances=2, seed=9, width=64, height=48, media=["text"])
    export = build_row(spec, 0)
    label = next(iter(export["projects"].values()))["labels"][0]
    label["annotations"]["objects"][2]["location"] = {"start": 9, "end": 1}
    parsed = parse_export_line(orjson.dumps(export), 0)
    assert isinstance(parsed, ParsedRow)
    summary, path = _write(tmp_path, parsed.tables)
    (line,) = [json.loads(x) for x in path.read_text().splitlines()]
    assert len(line["spans"]) == 2 and summary.skipped == {"invalid": 1}
