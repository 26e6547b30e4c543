"""Synthetic LLM human preference / response creation rows (`--media llm`).

Two shapes in one project, as Labelbox exports them:

- LLM human preference (odd rows of `is_response_creation`): the label holds only the
  radio "Choose the best response" whose answer names a response ("Response B") and a
  free-text reason (docs: "Export LLM human preference annotations"). The prompt and the
  responses are in the conversation JSON `data_row.row_data` names (a URL; "Import
  conversation & model response data": v1 `messages[]` with `messageId`, `content`,
  `user{userId, name}`, and `modelOutputs[]` with `title` "Response A" / "Response B",
  `content`, `modelConfigName`), served by the emulator, signed (`content`).
- Response creation (the other rows): the prompt and the responses are free-text answers
  in the label ("Export prompt and response data"), beside the same radio and reason; the
  served conversation holds the prompt message only.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import copy
import random
from typing import Any

import orjson

from labelhaul.emulator.synthetic import SyntheticSpec

RESPONSES = ("Response A", "Response B")
PREFERENCE_QUESTION = "Choose the best response"
REASON_QUESTION = "Provide a reason for your choice"
PROMPT_QUESTION = "Prompt"
_TOPICS = ("tea", "rivers", "bridges", "owls", "glaciers", "violins", "comets")
MIME_TYPE = "application/vnd.labelbox.conversational"
MODEL_CONFIGS = ("model-config-a", "model-config-b")


def is_response_creation(spec: SyntheticSpec, row: int) -> bool:
    """Whether row `row`'s label carries the prompt and responses as text answers."""
    return (row // len(spec.media)) % 2 == 0


def conversation_of(spec: SyntheticSpec, row: int) -> dict[str, Any]:
    """Return the conversation JSON (v1) at row `row`'s `row_data`."""
    conv: dict[str, Any] = {
        "type": MIME_TYPE,
        "version": 1,
        "messages": [
            {
                "messageId": f"message-{row}-0",
                "timestampUsec": 1700000000000000 + row,
                "content": f"Hello, I have a question (row {row}).",
                "user": {"userId": "user-0001", "name": "User"},
                "align": "left",
                "canLabel": True,
            },
            {
                "messageId": f"message-{row}-1",
                "timestampUsec": 1700000000000001 + row,
                "content": prompt_of(spec, row),
                "user": {"userId": "user-0001", "name": "User"},
                "align": "left",
                "canLabel": True,
            },
        ],
    }
    if not is_response_creation(spec, row):
        conv["modelOutputs"] = [
            {
                "title": RESPONSES[n],
                "content": response_of(spec, row, n),
                "modelConfigName": MODEL_CONFIGS[n],
            }
            for n in range(len(RESPONSES))
        ]
    return conv


def content(spec: SyntheticSpec, row: int, ext: str) -> tuple[bytes, str] | None:
    """Return the conversation file row `row`'s `row_data` names."""
    if ext != "json":
        return None
    return orjson.dumps(conversation_of(spec, row)), "application/json"


def prompt_of(spec: SyntheticSpec, row: int) -> str:
    """Return row `row`'s prompt text."""
    return f"Explain {_TOPICS[row % len(_TOPICS)]} to a child (row {row})."


def response_of(spec: SyntheticSpec, row: int, n: int) -> str:
    """Return the text of response `n` (0 = A) of row `row`."""
    return f"{RESPONSES[n]} about {_TOPICS[row % len(_TOPICS)]}: answer {n} of row {row}."


def chosen_of(spec: SyntheticSpec, row: int) -> int:
    """Return which response (0 = A, 1 = B) the labeler preferred on row `row`."""
    return random.Random(spec._row_seed(row, "llm-choice")).randrange(len(RESPONSES))


def _text(spec: SyntheticSpec, row: int, n: int, name: str, content: str) -> dict[str, Any]:
    return {
        "feature_id": spec.id("cl", row, n),
        "feature_schema_id": f"csynschemallm{n:011d}",
        "name": name,
        "value": name.lower().replace(" ", "_"),
        "text_answer": {"content": content},
    }


def build(spec: SyntheticSpec, row: int, base: dict[str, Any]) -> dict[str, Any]:
    """Return row `row` as an LLM preference data row (see the module docstring)."""
    out = copy.deepcopy(base)
    out["data_row"]["row_data"] = spec.content_url(row, "json")
    out["media_attributes"] = {"mime_type": MIME_TYPE}
    chosen = RESPONSES[chosen_of(spec, row)]
    texts = [
        _text(spec, row, 0, PROMPT_QUESTION, prompt_of(spec, row)),
        *(_text(spec, row, 1 + n, RESPONSES[n], response_of(spec, row, n)) for n in (0, 1)),
    ]
    classifications = [
        *(texts if is_response_creation(spec, row) else []),
        {
            "feature_id": spec.id("cl", row, 3),
            "feature_schema_id": "csynschemallmpreference0",
            "name": PREFERENCE_QUESTION,
            "value": "choose_the_best_response",
            "radio_answer": {
                "feature_id": spec.id("an", row, 3),
                "feature_schema_id": f"csynschemallmanswer{RESPONSES.index(chosen):05d}",
                "name": chosen,
                "value": chosen.lower().replace(" ", "_"),
                "classifications": [],
            },
        },
        _text(spec, row, 4, REASON_QUESTION, f"{chosen} is clearer (row {row})"),
    ]
    for project in out["projects"].values():
        for label in project["labels"]:
            label["annotations"] = {
                "objects": [],
                "classifications": classifications,
                "relationships": [],
            }
    return out
