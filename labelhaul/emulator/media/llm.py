"""Synthetic LLM human preference / response creation rows (`--media llm`).

Labelbox exports a preference label as global classifications (docs: "Export LLM human
preference annotations", "Export prompt and response data"): the prompt and the responses
as free-text answers, the preference as the radio "Choose the best response" whose answer
names a response ("Response B"), and a free-text reason. The conversation itself is not in
the export: `data_row.row_data` is the URL of the conversation JSON the project was loaded
from (`application/vnd.labelbox.conversational`), as Labelbox documents its import.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import copy
import random
from typing import Any

from labelhaul.emulator.synthetic import ORG_ID, SyntheticSpec

RESPONSES = ("Response A", "Response B")
PREFERENCE_QUESTION = "Choose the best response"
REASON_QUESTION = "Provide a reason for your choice"
PROMPT_QUESTION = "Prompt"
_TOPICS = ("tea", "rivers", "bridges", "owls", "glaciers", "violins", "comets")


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
    out["data_row"]["row_data"] = (
        f"https://storage.labelbox.com/{ORG_ID}%2F{spec.tag}-{row:06d}-conversation.json"
    )
    out["media_attributes"] = {"mime_type": "application/vnd.labelbox.conversational"}
    chosen = RESPONSES[chosen_of(spec, row)]
    classifications = [
        _text(spec, row, 0, PROMPT_QUESTION, prompt_of(spec, row)),
        *(_text(spec, row, 1 + n, RESPONSES[n], response_of(spec, row, n)) for n in (0, 1)),
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
