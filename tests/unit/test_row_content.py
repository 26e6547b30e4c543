"""Row content behind `row_data` (#16): fetched text and conversations into the tables.

Pure parts only: the covered text of fetched text, messages of a fetched conversation,
preference pairs from a conversation and the preference radio, the media jobs staging
lists, and the span lines of fetched text. The flow through the emulator is in
tests/integration/test_row_content_flow.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson

from labelhaul.emulator.media import conversational, llm
from labelhaul.emulator.media import text as text_media
from labelhaul.emulator.synthetic import SyntheticSpec, build_row
from labelhaul.parse_chat import parse_messages
from labelhaul.pipeline import media_job_of
from labelhaul.preference import write_preference
from labelhaul.row_content import apply_content, content_kind, count_statuses, missing_status
from labelhaul.rows import ParsedRow, parse_export_line
from labelhaul.spans import write_spans


def _spec(media: tuple[str, ...], n: int = 4) -> SyntheticSpec:
    return SyntheticSpec.make(n_rows=n, instances=1, seed=5, width=32, height=32, media=media)


def _parse(spec: SyntheticSpec, row: int) -> ParsedRow:
    parsed = parse_export_line(orjson.dumps(build_row(spec, row)), 0, source_id=spec.project_id)
    assert isinstance(parsed, ParsedRow)
    return parsed


def test_content_kind_follows_the_mime_type() -> None:
    assert content_kind("text/plain; charset=utf-8") == "text"
    assert content_kind("application/vnd.labelbox.conversational") == "conversation"
    assert content_kind("application/vnd.labelbox.conversational.model-chat-evaluation") == (
        "conversation"
    )
    assert content_kind("image/png") is None and content_kind(None) is None


def test_fetched_text_gives_url_rows_their_covered_text() -> None:
    spec = _spec(("text",))
    row = 1  # a URL row: its entities carry no token
    assert not text_media.is_inline(spec, row)
    parsed = _parse(spec, row)
    (data_row,) = parsed.tables["data_rows"]
    annotations = parsed.tables["annotations"]
    assert [a["text"] for a in annotations] == [None, None, None]
    text = text_media.text_of(spec, row)
    messages, errors = apply_content(data_row, annotations, text)
    assert messages == [] and errors == []
    assert data_row["content_text"] == text and data_row["content_status"] == "fetched"
    expected = [text[s:e] for s, e, _ in text_media.entity_spans(spec, row, text)]
    assert [a["text"] for a in annotations] == expected
    assert "caf\u00e9\U0001f600" in expected  # code point offsets, not UTF-16 units


def test_an_entity_past_the_fetched_text_is_invalid_and_recorded() -> None:
    spec = _spec(("text",))
    parsed = _parse(spec, 1)
    (data_row,) = parsed.tables["data_rows"]
    annotations = parsed.tables["annotations"]
    short = text_media.text_of(spec, 1)[: annotations[0]["text_end"]]  # the first word only
    _, errors = apply_content(data_row, annotations, short)
    assert [e.kind for e in errors] == ["bad_text_offsets"] * 2
    assert errors[0].data_row_id == spec.data_row_id(1) and errors[0].feature_id
    assert [a["valid"] for a in annotations] == [True, False, False]
    assert annotations[0]["text"] == short[annotations[0]["text_start"] :]


def test_a_token_that_differs_from_the_fetched_text_is_kept_with_a_warning() -> None:
    spec = _spec(("text",))
    parsed = _parse(spec, 1)
    (data_row,) = parsed.tables["data_rows"]
    annotations = parsed.tables["annotations"]
    annotations[0]["text"] = "not-the-text"
    _, errors = apply_content(data_row, annotations, text_media.text_of(spec, 1))
    assert [(e.kind, e.severity) for e in errors] == [("text_token_mismatch", "warning")]
    assert annotations[0]["text"] == "not-the-text"


def test_a_fetched_conversation_lands_messages_and_entity_text() -> None:
    spec = _spec(("conversational",))
    row = 1
    parsed = _parse(spec, row)
    assert parsed.tables["messages"] == []  # a URL: nothing in the export
    (data_row,) = parsed.tables["data_rows"]
    annotations = parsed.tables["annotations"]
    body = orjson.dumps(conversational.conversation_of(spec, row)).decode()
    messages, errors = apply_content(data_row, annotations, body)
    assert errors == [] and data_row["content_status"] == "fetched"
    assert [m["message_id"] for m in messages] == [str(n) for n in range(6)]
    assert {m["data_row_id"] for m in messages} == {spec.data_row_id(row)}
    for a in annotations:
        n = int(a["message_id"])
        content = conversational.message_text(spec, row, n)
        assert a["text"] == content[a["text_start"] : a["text_end"]]


def test_content_that_is_not_a_conversation_is_an_error_naming_the_row() -> None:
    spec = _spec(("conversational",))
    parsed = _parse(spec, 1)
    (data_row,) = parsed.tables["data_rows"]
    messages, errors = apply_content(data_row, [], "<html>not json</html>", sha256="ab" * 32)
    assert messages == []
    assert [e.kind for e in errors] == ["content_not_conversation"]
    assert errors[0].data_row_id == spec.data_row_id(1)
    assert errors[0].extra["media_sha256"] == "ab" * 32
    assert data_row["content_status"] == "content_not_conversation"


def test_statuses_of_rows_without_applied_content() -> None:
    text_row = {"mime_type": "text/plain", "hosting": "labelbox"}
    assert missing_status(text_row, None) == "not_fetched"
    assert missing_status(text_row, "media_url_expired") == "media_url_expired"
    assert missing_status({**text_row, "hosting": "inline"}, None) == "inline"
    assert missing_status({"mime_type": "image/png", "hosting": "labelbox"}, None) is None
    rows = [
        {**text_row, "content_status": "fetched"},
        {**text_row, "content_status": "media_not_found"},
        {"mime_type": "application/vnd.labelbox.conversational", "content_status": "inline"},
        {"mime_type": "image/png", "content_status": None},
    ]
    assert count_statuses(rows) == {
        "text": {"fetched": 1, "media_not_found": 1},
        "conversation": {"inline": 1},
    }


def test_staging_lists_only_text_like_url_rows_without_include_media() -> None:
    spec = _spec(("image", "text", "llm", "conversational"), n=8)
    listed = {}
    for r in range(spec.n_rows):
        line = orjson.dumps(build_row(spec, r))
        job = media_job_of(line, spec.data_row_id(r), None, 0, media=False, row_content=True)
        listed[r] = job
    # image rows: never; text rows 1 and 5: 1 inline (row 1: r // 4 = 0), 5 a URL.
    assert listed[0] is None and listed[4] is None
    assert listed[1] is None  # inline text
    assert listed[5] is not None and listed[5].content
    assert all(listed[r] is not None and listed[r].content for r in (2, 6, 7))
    assert listed[3] is None  # inline conversation
    # With include_media every URL row is listed; only text-like ones ask for the body.
    image = media_job_of(orjson.dumps(build_row(spec, 0)), "x", None, 0, media=True)
    assert image is not None and not image.content
    assert media_job_of(orjson.dumps(build_row(spec, 5)), "x", None, 0, media=False) is None


def _llm_tables(
    spec: SyntheticSpec,
) -> tuple[list[str], list[dict[str, Any]], list[dict[str, Any]]]:
    """Return the data row ids, classifications and messages as the sync lands them."""
    ids, classifications, messages = [], [], []
    for r in range(spec.n_rows):
        parsed = _parse(spec, r)
        ids.append(spec.data_row_id(r))
        classifications += parsed.tables["classifications"]
        base = {"data_row_id": spec.data_row_id(r), "global_key": spec.global_key(r)}
        messages += parse_messages(llm.conversation_of(spec, r), base)
    return ids, classifications, messages


def test_pairs_from_the_conversation_and_the_preference_radio(tmp_path: Path) -> None:
    spec = _spec(("llm",), n=6)
    ids, classifications, messages = _llm_tables(spec)
    preference_only = [r for r in range(6) if not llm.is_response_creation(spec, r)]
    assert preference_only == [1, 3, 5]
    for r in preference_only:  # the real shape: the radio and the reason, nothing else
        names = {c["question_name"] for c in classifications if c["data_row_id"] == ids[r]}
        assert names == {llm.PREFERENCE_QUESTION, llm.REASON_QUESTION}
    path = tmp_path / "pairs.jsonl"
    summary = write_preference(path, classifications, messages, ids)
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert summary.pairs == summary.labels == 6 and summary.skipped == {}
    assert (summary.from_answers, summary.from_conversation) == (3, 3)
    assert [line["data_row_id"] for line in lines] == ids
    for r, line in enumerate(lines):
        chosen = llm.chosen_of(spec, r)
        assert line["prompt"] == llm.prompt_of(spec, r)  # the last message before the outputs
        assert line["chosen"] == llm.response_of(spec, r, chosen)
        assert line["rejected"] == llm.response_of(spec, r, 1 - chosen)
        assert (line["chosen_name"], line["rejected_name"]) == (
            llm.RESPONSES[chosen],
            llm.RESPONSES[1 - chosen],
        )
        assert line["reason"].startswith(llm.RESPONSES[chosen])
    again = tmp_path / "again.jsonl"
    write_preference(again, classifications, messages, ids)
    assert again.read_bytes() == path.read_bytes()


def test_a_row_without_messages_does_not_hide_a_later_rows_conversation(tmp_path: Path) -> None:
    spec = _spec(("llm",), n=6)
    ids, classifications, messages = _llm_tables(spec)
    # Row 3's conversation could not be fetched: rows 1 and 5 still get theirs.
    messages = [m for m in messages if m["data_row_id"] != ids[3]]
    summary = write_preference(tmp_path / "p.jsonl", classifications, messages, ids)
    lines = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [line["data_row_id"] for line in lines] == [ids[r] for r in (0, 1, 2, 4, 5)]
    assert summary.labels == 6 and summary.skipped == {"no_conversation": 1}
    # Without any messages every preference-only label is counted, none dropped silently.
    none = write_preference(tmp_path / "q.jsonl", classifications)
    assert none.pairs == 3 and none.skipped == {"no_conversation": 3}


def test_span_lines_of_fetched_text(tmp_path: Path) -> None:
    spec = _spec(("text",), n=2)
    data_rows, annotations = [], []
    for r in range(2):
        parsed = _parse(spec, r)
        (row,) = parsed.tables["data_rows"]
        if not text_media.is_inline(spec, r):
            apply_content(row, parsed.tables["annotations"], text_media.text_of(spec, r))
        data_rows.append(row)
        annotations += parsed.tables["annotations"]
    summary = write_spans(tmp_path / "s.jsonl", data_rows, annotations)
    lines = [json.loads(x) for x in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert summary.lines == 2 and dict(summary.skipped) == {}
    for r, line in enumerate(lines):
        assert line["text"] == text_media.text_of(spec, r)
        assert [(s["start"], s["end"], s["label"]) for s in line["spans"]] == sorted(
            text_media.entity_spans(spec, r, line["text"])
        )
