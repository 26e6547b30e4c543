"""Row content behind `row_data`: a text's or a conversation's file, into the tables (#16).

Labelbox exports a text row's or a conversation's `row_data` as uploaded: the content itself,
or the URL of a file (a UTF-8 .txt; the conversation JSON, `application/vnd.labelbox.
conversational`, which is where an LLM human preference project keeps its prompt and
responses). Without that file such a row is not usable for training, so the media stage
fetches it (`LABELHAUL_FETCH_ROW_CONTENT`, on by default; `labelhaul.media` stores it once,
content-named) and the sync applies it here, one data row at a time, to the records
staging parsed from the export line:

- text (`text/plain`): `data_rows.content_text` holds the text; each `TextEntity` without
  covered text gets `text[text_start:text_end]` (an exported token is kept, and a token that
  differs from the fetched text is a `text_token_mismatch` warning);
- conversation: the `messages` table gets its messages (`parse_chat.parse_messages`) and
  each `ConversationalTextEntity` its covered text (the slice of its message's content;
  for an inline conversation too, `cover_conversation_entities`).

`data_rows.content_status` says where every text-like row's content came from: `inline`
(the export held it), `fetched`, `not_fetched` (the fetch was off), or why it is missing
(the media stage's error kind: `media_url_expired`, `media_not_found`, ...; or
`content_not_utf8`, `content_not_conversation`, `content_too_large`). Rows of other media
types have none. A problem is also an error record of stage `media` naming the row.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from labelhaul.parse_chat import parse_messages
from labelhaul.parse_text import CONVERSATIONAL_ENTITY, TEXT_ENTITY
from labelhaul.records import ErrorRecord
from labelhaul.urls import INLINE

STAGE = "media"
TEXT = "text"
CONVERSATION = "conversation"
INLINE_STATUS = "inline"
FETCHED = "fetched"
NOT_FETCHED = "not_fetched"
# Labelbox takes text up to 16 MB; a larger body is not text Labelbox could label.
CONTENT_MAX_BYTES = 16 * 1024 * 1024
_CONVERSATIONAL = "application/vnd.labelbox.conversational"


def content_kind(mime_type: Any) -> str | None:
    """Return TEXT or CONVERSATION for a text-like row's MIME type, else None.

    Conversations are `application/vnd.labelbox.conversational` (LLM human preference,
    conversational text) and its `.model-chat-evaluation` variant (multimodal chat v2).
    """
    if not isinstance(mime_type, str):
        return None
    mime = mime_type.split(";", 1)[0].strip().lower()
    if mime == "text/plain":
        return TEXT
    if mime.startswith(_CONVERSATIONAL):
        return CONVERSATION
    return None


def wants_content(row_data: Any, media_attributes: Any) -> bool:
    """Tell whether a row's `row_data` is the URL of text-like content to fetch."""
    if not isinstance(row_data, str) or not row_data[:8].lower().startswith(
        ("http://", "https://")
    ):
        return False
    mime = media_attributes.get("mime_type") if isinstance(media_attributes, dict) else None
    return content_kind(mime) is not None


def decode_content(data: bytes) -> str | None:
    """Return fetched content as text (UTF-8, a BOM dropped), None when it is not UTF-8."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None


def apply_content(
    data_row: dict[str, Any],
    annotations: Iterable[dict[str, Any]],
    text: str,
    *,
    sha256: str | None = None,
) -> tuple[list[dict[str, Any]], list[ErrorRecord]]:
    """Apply one row's fetched content to its records (in place); return messages and errors.

    `data_row` is the row's `data_rows` record (its `mime_type` says what the content is),
    `annotations` its `annotations` records, `text` the fetched content decoded.
    """
    kind = content_kind(data_row.get("mime_type"))
    errors: list[ErrorRecord] = []
    if kind == TEXT:
        data_row["content_text"] = text
        data_row["content_status"] = FETCHED
        for rec in annotations:
            _cover_text_entity(data_row, rec, text, errors)
        return [], errors
    if kind != CONVERSATION:
        return [], errors
    base = {"data_row_id": data_row.get("data_row_id"), "global_key": data_row.get("global_key")}
    conv = _conversation_json(text, data_row.get("mime_type"))
    messages = parse_messages(conv, base) if conv is not None else []
    if not messages:
        data_row["content_status"] = "content_not_conversation"
        errors.append(
            _error(
                data_row,
                "content_not_conversation",
                "is not a conversation JSON with messages (Labelbox's conversational "
                "format: `messages` and, for LLM preference, `modelOutputs`); its messages "
                "and preference pairs are missing. Check the file the row's row_data names",
                sha256,
            )
        )
        return [], errors
    data_row["content_status"] = FETCHED
    contents = {m["message_id"]: m.get("content") for m in messages}
    for rec in annotations:
        if rec.get("annotation_kind") == CONVERSATIONAL_ENTITY and rec.get("text") is None:
            _cover(rec, contents.get(rec.get("message_id")))
    return messages, errors


def cover_conversation_entities(
    annotations: Iterable[dict[str, Any]], messages: Iterable[Mapping[str, Any]]
) -> None:
    """Fill `ConversationalTextEntity` covered text from the rows' messages (in place).

    For inline conversations, whose messages staging parsed from the export line.
    """
    wanted = [
        a
        for a in annotations
        if a.get("annotation_kind") == CONVERSATIONAL_ENTITY and a.get("text") is None
    ]
    if not wanted:
        return
    rows = {str(a.get("data_row_id")) for a in wanted}
    contents = {
        (str(m.get("data_row_id")), m.get("message_id")): m.get("content")
        for m in messages
        if str(m.get("data_row_id")) in rows
    }
    for rec in wanted:
        _cover(rec, contents.get((str(rec.get("data_row_id")), rec.get("message_id"))))


def _conversation_json(text: str, mime_type: Any) -> dict[str, Any] | None:
    try:
        conv = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(conv, dict):
        return None
    if not isinstance(conv.get("type"), str):
        # The row's MIME type says what it is when the file does not.
        conv = {**conv, "type": str(mime_type)}
    return conv


def _cover(rec: dict[str, Any], text: Any) -> None:
    start, end = rec.get("text_start"), rec.get("text_end")
    if isinstance(text, str) and isinstance(start, int) and isinstance(end, int):
        if 0 <= start <= end <= len(text):
            rec["text"] = text[start:end]


def _cover_text_entity(
    data_row: Mapping[str, Any], rec: dict[str, Any], text: str, errors: list[ErrorRecord]
) -> None:
    if rec.get("annotation_kind") != TEXT_ENTITY or not rec.get("valid"):
        return
    start, end = rec.get("text_start"), rec.get("text_end")
    if not isinstance(start, int) or not isinstance(end, int):
        return
    if end > len(text):
        rec["valid"] = False
        rec["error_kind"] = "bad_text_offsets"
        errors.append(
            _error(
                data_row,
                "bad_text_offsets",
                f"has an entity ending at {end}, past its fetched text ({len(text)} "
                "characters); the entity is kept with valid = false",
                None,
                feature_id=rec.get("feature_id"),
                label_id=rec.get("label_id"),
            )
        )
        return
    covered = text[start:end]
    token = rec.get("text")
    if token is None:
        rec["text"] = covered
    elif token != covered:
        errors.append(
            _error(
                data_row,
                "text_token_mismatch",
                f"has an exported token {token!r} that is not its fetched text at "
                f"[{start}, {end}) ({covered!r}); kept the token",
                None,
                feature_id=rec.get("feature_id"),
                label_id=rec.get("label_id"),
                severity="warning",
            )
        )


def _error(
    data_row: Mapping[str, Any],
    kind: str,
    what: str,
    sha256: str | None,
    *,
    feature_id: Any = None,
    label_id: Any = None,
    severity: str = "error",
) -> ErrorRecord:
    drid = data_row.get("data_row_id")
    return ErrorRecord(
        STAGE,
        kind,
        f"the content of data row {drid} (row_data {data_row.get('row_data')}) {what}",
        data_row_id=None if drid is None else str(drid),
        global_key=data_row.get("global_key"),
        label_id=None if label_id is None else str(label_id),
        feature_id=None if feature_id is None else str(feature_id),
        extra={"media_sha256": sha256, "path": "data_row.row_data"},
        severity=severity,
    )


def missing_status(data_row: Mapping[str, Any], media_error: str | None) -> str | None:
    """Return the `content_status` of a text-like row no content was applied to."""
    if content_kind(data_row.get("mime_type")) is None:
        return None
    if data_row.get("hosting") == INLINE:
        return INLINE_STATUS
    return media_error or NOT_FETCHED


def count_statuses(data_rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """Count text-like rows by kind (text, conversation) and `content_status`."""
    counts: dict[str, Counter[str]] = {TEXT: Counter(), CONVERSATION: Counter()}
    for row in data_rows:
        kind = content_kind(row.get("mime_type"))
        if kind is not None:
            counts[kind][str(row.get("content_status") or NOT_FETCHED)] += 1
    return {k: dict(sorted(c.items())) for k, c in counts.items()}
