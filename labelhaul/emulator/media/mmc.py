"""Synthetic multimodal chat evaluation rows (`--media mmc`).

Labelbox exports a multimodal chat label as message tools and classifications (docs:
"Export multimodal chat annotations"; the tools' shape is that of labelbox-python's export
test, `expected_exports_v2_mmc`): a `MessageSingleSelection` with `selected_message`, a
`MessageMultiSelection` with `selected_messages{messages[]}` and a `MessageRanking` with
`ranked_messages{ranked_messages[]}`, each naming the prompt message (`parent_message_id`)
and the chosen or ranked responses (`message_id`, `model_config_name`, `order` 1 = best)
(not the SDK's import shape, `message_evaluation_task{format, data}`); message-scoped answers
(`conversational_radio_answer`, `conversational_checklist_answers`,
`conversational_text_answer` with `message_id`) and global ones. The conversation is not in
the export: `row_data` is the URL of its conversation v2 JSON ("Import multimodal chat
data": `actors{id: {role, metadata}}`, `messages{id: {actorId, content[], childMessageIds}}`),
which the emulator serves, signed (`content`).

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import copy
import random
from typing import Any

import orjson

from labelhaul.emulator.synthetic import SyntheticSpec

MODELS = ("model-alpha", "model-beta", "model-gamma")
MIME_TYPE = "application/vnd.labelbox.conversational.model-chat-evaluation"


def conversation_of(spec: SyntheticSpec, row: int) -> dict[str, Any]:
    """Return the conversation v2 JSON at row `row`'s `row_data`: a prompt, a reply per model."""
    human = spec.id("ac", row, 0)
    actors: dict[str, Any] = {human: {"role": "human", "metadata": {"name": "User"}}}
    replies = [response_message_id(spec, row, n) for n in range(len(MODELS))]
    messages: dict[str, Any] = {
        prompt_message_id(spec, row): {
            "actorId": human,
            "content": [{"type": "text", "content": f"Which boat is best? (row {row})"}],
            "childMessageIds": replies,
        }
    }
    for n, model in enumerate(MODELS):
        actor = spec.id("ac", row, 1 + n)
        actors[actor] = {"role": "model", "metadata": {"modelConfigName": model}}
        messages[replies[n]] = {
            "actorId": actor,
            "content": [{"type": "text", "content": f"{model} answers row {row}."}],
            "childMessageIds": [],
        }
    return {"type": MIME_TYPE, "version": 2, "actors": actors, "messages": messages}


def content(spec: SyntheticSpec, row: int, ext: str) -> tuple[bytes, str] | None:
    """Return the conversation file row `row`'s `row_data` names."""
    if ext != "json":
        return None
    return orjson.dumps(conversation_of(spec, row)), "application/json"


def prompt_message_id(spec: SyntheticSpec, row: int) -> str:
    """Return the id of row `row`'s prompt message."""
    return spec.id("ms", row, 0)


def response_message_id(spec: SyntheticSpec, row: int, n: int) -> str:
    """Return the id of model `n`'s response message on row `row`."""
    return spec.id("ms", row, 1 + n)


def ranking_of(spec: SyntheticSpec, row: int) -> list[int]:
    """Return the models (indexes into MODELS) of row `row` from best to worst."""
    order = list(range(len(MODELS)))
    random.Random(spec._row_seed(row, "mmc-rank")).shuffle(order)
    return order


# Where each tool keeps its messages in the export, and the list inside (None: the tool's
# object is the one message).
_EXPORT_KEYS = {
    "MessageSingleSelection": ("selected_message", None),
    "MessageMultiSelection": ("selected_messages", "messages"),
    "MessageRanking": ("ranked_messages", "ranked_messages"),
}


def _tool(
    spec: SyntheticSpec, row: int, n: int, kind: str, fmt: str, data: dict[str, Any]
) -> dict[str, Any]:
    name = {"MessageSingleSelection": "best_response", "MessageMultiSelection": "good_responses"}
    label = name.get(kind, "response_ranking")
    key, inner = _EXPORT_KEYS[kind]
    if inner is None:
        held = data
    else:
        # `data` is in the import shape; the export's list key differs for multi-selection.
        listed = data["selected_messages"] if kind == "MessageMultiSelection" else data[inner]
        held = {"parent_message_id": data["parent_message_id"], inner: listed}
    return {
        "feature_id": spec.id("mt", row, n),
        "feature_schema_id": f"csynschemammc{n:011d}",
        "name": label,
        "value": label,
        "annotation_kind": kind,
        "classifications": [],
        key: held,
    }


def ranked_messages(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """Return a MessageRanking object's ranked messages (export or import shape)."""
    held = obj.get("ranked_messages")
    if isinstance(held, dict):
        out: list[dict[str, Any]] = held["ranked_messages"]
        return out
    legacy: list[dict[str, Any]] = obj["message_evaluation_task"]["data"]["ranked_messages"]
    return legacy


def _msg(spec: SyntheticSpec, row: int, n: int) -> dict[str, str]:
    return {"message_id": response_message_id(spec, row, n), "model_config_name": MODELS[n]}


def build(spec: SyntheticSpec, row: int, base: dict[str, Any]) -> dict[str, Any]:
    """Return row `row` as a multimodal chat data row (see the module docstring)."""
    out = copy.deepcopy(base)
    out["data_row"]["row_data"] = spec.content_url(row, "json")
    out["media_attributes"] = {"mime_type": MIME_TYPE}
    ranking = ranking_of(spec, row)
    parent = prompt_message_id(spec, row)
    objects = [
        _tool(
            spec,
            row,
            0,
            "MessageSingleSelection",
            "message-single-selection",
            {"parent_message_id": parent, **_msg(spec, row, ranking[0])},
        ),
        _tool(
            spec,
            row,
            1,
            "MessageMultiSelection",
            "message-multi-selection",
            {
                "parent_message_id": parent,
                "selected_messages": [_msg(spec, row, n) for n in sorted(ranking[:2])],
            },
        ),
        _tool(
            spec,
            row,
            2,
            "MessageRanking",
            "message-ranking",
            {
                "parent_message_id": parent,
                "ranked_messages": [
                    {**_msg(spec, row, n), "order": i + 1} for i, n in enumerate(ranking)
                ],
            },
        ),
    ]
    best = response_message_id(spec, row, ranking[0])

    def answer(n: int, name: str) -> dict[str, Any]:
        return {
            "feature_id": spec.id("an", row, n),
            "feature_schema_id": f"csynschemammcans{n:08d}",
            "name": name,
            "value": name.lower(),
            "classifications": [],
        }

    def question(n: int, name: str, **rest: Any) -> dict[str, Any]:
        return {
            "feature_id": spec.id("cl", row, n),
            "feature_schema_id": f"csynschemammccl{n:09d}",
            "name": name,
            "value": name.lower().replace(" ", "_"),
            **rest,
        }

    classifications = [
        question(
            0,
            "Context subject",
            message_id=best,
            conversational_radio_answer=answer(0, "Car" if row % 2 else "Boat"),
        ),
        question(
            1,
            "Response qualities",
            message_id=best,
            conversational_checklist_answers=[answer(1, "Accurate"), answer(2, "Concise")],
        ),
        question(
            2,
            "Response note",
            message_id=best,
            conversational_text_answer={"content": f"best reply of row {row}"},
        ),
        question(3, "Additional comment", text_answer={"content": f"Color: row {row}"}),
    ]
    for project in out["projects"].values():
        for label in project["labels"]:
            label["annotations"] = {
                "objects": objects,
                "classifications": classifications,
                "relationships": [],
            }
    return out
