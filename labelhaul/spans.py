"""Stream the span JSONL (`spans/ner`) that spaCy-style NER training reads.

One line per text: a data row's label (ground truth, the label policy's choice when a data
row has several, as COCO) with entity spans, in Prodigy's JSONL task shape, which spaCy
users turn into a `DocBin` with `Doc.char_span` (or `prodigy data-to-spacy`):

    {"text": "...", "spans": [{"start": 0, "end": 5, "label": "person",
     "feature_id": "..."}], "data_row_id": "...", "global_key": "...", "label_id": "...",
     "media": "text" | "document"}

Offsets are character (code point) offsets into `text`, end exclusive, as Python slices and
`Doc.char_span` take them; spans are sorted by (start, end, label, feature_id) and may
overlap (spaCy's `doc.spans` holds overlapping spans; `doc.ents` does not).

- Text (`TextEntity`): `text` is the row's text: `row_data` when it is the text itself,
  else the text the sync fetched from the `row_data` URL (`data_rows.content_text`,
  labelhaul.row_content). A row whose text is neither is left out, its entities counted as
  `text_not_in_export` (the manifest's `spans.text_rows` says why the text is missing).
- Documents (`DocumentEntityToken`): the text layer is not in the export, only each token
  group's text, so `text` is the label's token groups' texts joined by a newline, in page
  order then export order, and each group is one span covering its text.
- Conversations carry no text in the export; their entities are counted as
  `text_not_in_export` and are in `annotations` (`message_id`, offsets).

Records must come in table order: each data row's records consecutive (as the sync writes
them), the same order in `data_rows` and `annotations`. Memory holds one data row's spans.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from labelhaul.parse_text import CONVERSATIONAL_ENTITY, DOCUMENT_TOKENS, TEXT_ENTITY
from labelhaul.urls import INLINE

SPAN_KINDS = frozenset({TEXT_ENTITY, DOCUMENT_TOKENS, CONVERSATIONAL_ENTITY})
# Only these columns are read from the tables.
ANNOTATION_COLUMNS = (
    "data_row_id",
    "global_key",
    "label_id",
    "source",
    "feature_id",
    "name",
    "annotation_kind",
    "text_start",
    "text_end",
    "text",
    "page_number",
    "valid",
)
DATA_ROW_COLUMNS = ("data_row_id", "row_data", "hosting", "content_text")


@dataclass
class SpansSummary:
    """What a span file holds and what it left out (the manifest's `spans` section)."""

    lines: int = 0
    spans: int = 0
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> entities left out

    def facts(self) -> dict[str, Any]:
        return {
            "lines": self.lines,
            "spans": self.spans,
            "skipped": dict(sorted(self.skipped.items())),
        }


def write_spans(
    path: str | Path,
    data_rows: Iterable[Mapping[str, Any]],
    annotations: Iterable[Mapping[str, Any]],
    *,
    selected_labels: Mapping[str, str] | None = None,
) -> SpansSummary:
    """Write the span JSONL from `data_rows` and `annotations` records (table order)."""
    summary = SpansSummary()
    chosen = selected_labels or {}
    texts = _InlineTexts(iter(data_rows))
    with Path(path).open("wb") as fh:
        for drid, records in _by_data_row(annotations):
            wanted = [r for r in records if _wanted(r, chosen, summary)]
            if not wanted:
                continue
            text = texts.find(drid)
            for line in _lines(drid, wanted, text, summary):
                fh.write(orjson.dumps(line) + b"\n")
                summary.lines += 1
                summary.spans += len(line["spans"])
    return summary


def _wanted(rec: Mapping[str, Any], chosen: Mapping[str, str], summary: SpansSummary) -> bool:
    if rec.get("annotation_kind") not in SPAN_KINDS or rec.get("source") != "label":
        return False
    pick = chosen.get(str(rec["data_row_id"]))
    if pick is not None and rec.get("label_id") != pick:
        summary.skipped["label_not_selected"] += 1
        return False
    if not rec.get("valid"):
        summary.skipped["invalid"] += 1
        return False
    return True


def _by_data_row(
    records: Iterable[Mapping[str, Any]],
) -> Iterator[tuple[str, list[Mapping[str, Any]]]]:
    current: str | None = None
    group: list[Mapping[str, Any]] = []
    for rec in records:
        drid = str(rec["data_row_id"])
        if drid != current:
            if current is not None and group:
                yield current, group
            current, group = drid, []
        if rec.get("annotation_kind") in SPAN_KINDS:
            group.append(rec)
    if current is not None and group:
        yield current, group


class _InlineTexts:
    """Walk `data_rows` alongside `annotations`: a data row's text (inline or fetched)."""

    def __init__(self, rows: Iterator[Mapping[str, Any]]) -> None:
        self._rows = rows
        self._seen: tuple[str, str | None] | None = None

    def find(self, drid: str) -> str | None:
        if self._seen is not None and self._seen[0] == drid:
            return self._seen[1]
        for row in self._rows:
            text = row.get("row_data") if row.get("hosting") == INLINE else None
            if text is None:
                text = row.get("content_text")  # fetched from the row_data URL
            self._seen = (str(row["data_row_id"]), text if isinstance(text, str) else None)
            if self._seen[0] == drid:
                return self._seen[1]
        return None


def _lines(
    drid: str, records: list[Mapping[str, Any]], text: str | None, summary: SpansSummary
) -> Iterator[dict[str, Any]]:
    by_label: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for rec in records:
        media = "document" if rec["annotation_kind"] == DOCUMENT_TOKENS else "text"
        if rec["annotation_kind"] == CONVERSATIONAL_ENTITY:
            summary.skipped["text_not_in_export"] += 1
            continue
        by_label.setdefault((str(rec.get("label_id") or ""), media), []).append(rec)
    for (label_id, media), recs in sorted(by_label.items()):
        if media == "document":
            body, spans = _document(recs)
        else:
            if text is None:
                summary.skipped["text_not_in_export"] += len(recs)
                continue
            body, spans = text, [_span(r, r["text_start"], r["text_end"]) for r in recs]
        yield {
            "text": body,
            "spans": sorted(
                spans, key=lambda s: (s["start"], s["end"], s["label"], s["feature_id"] or "")
            ),
            "data_row_id": drid,
            "global_key": recs[0].get("global_key"),
            "label_id": label_id or None,
            "media": media,
        }


def _document(recs: list[Mapping[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    ordered = sorted(enumerate(recs), key=lambda ir: (ir[1].get("page_number") or 0, ir[0]))
    parts: list[str] = []
    spans = []
    at = 0
    for _, rec in ordered:
        piece = str(rec.get("text") or "")
        if parts:
            at += 1  # the newline between groups
        spans.append(_span(rec, at, at + len(piece)))
        parts.append(piece)
        at += len(piece)
    return "\n".join(parts), spans


def _span(rec: Mapping[str, Any], start: int, end: int) -> dict[str, Any]:
    return {
        "start": int(start),
        "end": int(end),
        "label": rec.get("name") or "unknown",
        "feature_id": rec.get("feature_id"),
    }
