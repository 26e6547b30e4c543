"""Synthetic conversational text rows: entities per message, message-scoped answers.

Shapes as Labelbox exports them (docs.labelbox.com "Export conversational text
annotations", the SDK's export fixtures): `ConversationalTextEntity` with
`conversational_location{message_id, location{start, end}}` (no token: the conversation is
a JSON file at `row_data`, not in the export), global questions answered for one message
(`message_id` beside `conversational_radio_answer`, `conversational_checklist_answers`,
`conversational_text_answer`), and a `TextUnidirectionalRelationship` between two entities.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import random
from typing import Any

from labelhaul.emulator.media.text import label_annotations, relationship
from labelhaul.emulator.synthetic import SyntheticSpec, answer, question


def build(spec: SyntheticSpec, row: int, base: dict[str, Any]) -> dict[str, Any]:
    """Turn the image-shaped `base` row into a conversation row."""
    rng = random.Random(spec._row_seed(row, "conversation"))
    base["data_row"]["row_data"] = (
        f"https://storage.labelbox.com/synthetic%2F{spec.tag}-{row:06d}.json"
    )
    base["media_attributes"] = {"mime_type": "application/vnd.labelbox.conversational"}
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
