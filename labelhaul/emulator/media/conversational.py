"""Synthetic conversational text rows: entities per message, message-scoped answers.

Shapes as Labelbox exports them (docs.labelbox.com "Export conversational text
annotations", the SDK's export fixtures): `ConversationalTextEntity` with
`conversational_location{message_id, location{start, end}}` (no token: the conversation is
a JSON file at `row_data`, not in the export), global questions answered for one message
(`message_id` beside `conversational_radio_answer`, `conversational_checklist_answers`,
`conversational_text_answer`), and a `TextUnidirectionalRelationship` between two entities.

The conversation is Labelbox's conversational import format v1 ("Import conversational
text data": `type` `application/vnd.labelbox.conversational`, `version` 1, `messages[]`
with `messageId`, `content`, `user{userId, name}`, `align`, `canLabel`). Rows whose
`text.is_inline` says so carry it inline as `row_data` (a JSON string); the others name a
file the emulator serves (`content`, signed like image media).

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import random
from typing import Any

import orjson

from labelhaul.emulator.media.text import is_inline, label_annotations, relationship
from labelhaul.emulator.synthetic import SyntheticSpec, answer, question

MIME_TYPE = "application/vnd.labelbox.conversational"
N_MESSAGES = 6
_SPEAKERS = (("user-0001", "Customer"), ("agent-0001", "Agent"))


def message_text(spec: SyntheticSpec, row: int, n: int) -> str:
    """Return the content of message `n` of row `row` (long enough for every entity)."""
    who = "customer" if n % 2 == 0 else "agent"
    return f"Message {n} of row {row} from the {who}: the parcel to Lisbon is late again today."


def conversation_of(spec: SyntheticSpec, row: int) -> dict[str, Any]:
    """Return row `row`'s conversation JSON (v1), messages "0".."5"."""
    messages = []
    for n in range(N_MESSAGES):
        user_id, name = _SPEAKERS[n % 2]
        messages.append(
            {
                "messageId": str(n),
                "timestampUsec": 1700000000000000 + n,
                "content": message_text(spec, row, n),
                "user": {"userId": user_id, "name": name},
                "align": "left" if n % 2 == 0 else "right",
                "canLabel": True,
            }
        )
    return {"type": MIME_TYPE, "version": 1, "messages": messages}


def content(spec: SyntheticSpec, row: int, ext: str) -> tuple[bytes, str] | None:
    """Return the conversation file a URL row's `row_data` names."""
    if ext != "json" or is_inline(spec, row):
        return None
    return orjson.dumps(conversation_of(spec, row)), "application/json"


def build(spec: SyntheticSpec, row: int, base: dict[str, Any]) -> dict[str, Any]:
    """Turn the image-shaped `base` row into a conversation row."""
    rng = random.Random(spec._row_seed(row, "conversation"))
    base["data_row"]["row_data"] = (
        orjson.dumps(conversation_of(spec, row)).decode()
        if is_inline(spec, row)
        else spec.content_url(row, "json")
    )
    base["media_attributes"] = {"mime_type": MIME_TYPE}
    objects: list[dict[str, Any]] = []
    for n in range(3):
        start = rng.randint(0, 40)
        objects.append(
            {
                "feature_id": spec.id("ob", row, n),
                "feature_schema_id": "csynschemaner000000000000",
                "name": "ner",
                "value": "ner",
                "annotation_kind": "ConversationalTextEntity",
                "classifications": [],
                "conversational_location": {
                    "message_id": str(n * 2),
                    "location": {"start": start, "end": start + rng.randint(1, 12)},
                },
            }
        )
    annotations = label_annotations(base, spec)
    annotations["objects"] = objects
    annotations["relationships"] = [
        relationship(
            spec,
            row,
            "TextUnidirectionalRelationship",
            objects[0]["feature_id"],
            objects[1]["feature_id"],
        )
    ]
    # Global questions keep the image row's; these are answered for one message each.
    annotations["classifications"] = [
        *annotations["classifications"],
        question(
            spec,
            row,
            20,
            "intent",
            message_id="0",
            conversational_radio_answer=answer(spec, row, 20, "question"),
        ),
        question(
            spec,
            row,
            21,
            "tone",
            message_id="2",
            conversational_checklist_answers=[
                answer(spec, row, 21, "polite"),
                answer(spec, row, 22, "brief"),
            ],
        ),
        question(
            spec,
            row,
            23,
            "summary",
            message_id="4",
            conversational_text_answer={"content": f"message 4 of row {row}"},
        ),
    ]
    return base
