"""Multimodal chat / LLM evaluation tools and conversations of an export line (#16).

- `MessageSingleSelection`, `MessageMultiSelection`, `MessageRanking` objects land as
  `annotations` rows, one per selected or ranked message: `message_id`,
  `parent_message_id`, `model_config_name` and, for a ranking, `rank` (1 = best). Labelbox
  exports them as `selected_message{message_id, model_config_name, parent_message_id}`,
  `selected_messages{messages[], parent_message_id}` and `ranked_messages{ranked_messages[]
  (with `order`), parent_message_id}` (labelbox-python's export test,
  `expected_exports_v2_mmc`); the import shape of the SDK's
  `MessageEvaluationTaskAnnotation` (`message_evaluation_task.data`) is read too.
- The conversation lands in `messages` when the export holds it: `row_data` that is the
  conversation JSON itself (v1 `application/vnd.labelbox.conversational` with
  `messages[]` and `modelOutputs[]`, or v2 `...model-chat-evaluation` with `actors`,
  `messages{}`). Labelbox usually exports `row_data` as the URL of that JSON: the media
  stage fetches it and `labelhaul.row_content` parses it with `parse_messages` too.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

from typing import Any

import orjson

from labelhaul.coerce import as_dict as _dict
from labelhaul.coerce import as_json
from labelhaul.coerce import as_list as _list
from labelhaul.coerce import as_str as _str

MESSAGE_KINDS = {
    "MessageSingleSelection": "message-single-selection",
    "MessageMultiSelection": "message-multi-selection",
    "MessageRanking": "message-ranking",
}


# The key of each tool's messages in Labelbox's export (labelbox-python
# tests/integration/conftest.py `expected_exports_v2_mmc`).
EXPORT_KEYS = {
    "MessageSingleSelection": "selected_message",
    "MessageMultiSelection": "selected_messages",
    "MessageRanking": "ranked_messages",
}


def _task_messages(obj: dict[str, Any], kind: str) -> tuple[Any, list[Any]] | None:
    """Return (parent message id, selected or ranked messages) of a tool, or None."""
    held = obj.get(EXPORT_KEYS[kind])
    if isinstance(held, dict):
        if kind == "MessageSingleSelection":
            return held.get("parent_message_id"), [held]
        inner = "messages" if kind == "MessageMultiSelection" else "ranked_messages"
        return held.get("parent_message_id"), _list(held.get(inner))
    # The SDK's import shape (MessageEvaluationTaskAnnotation), an earlier reading.
    task = obj.get("message_evaluation_task")
    data = task.get("data") if isinstance(task, dict) else None
    if not isinstance(data, dict):
        return None
    if kind == "MessageSingleSelection":
        return data.get("parent_message_id"), [data]
    key = "selected_messages" if kind == "MessageMultiSelection" else "ranked_messages"
    return data.get("parent_message_id"), _list(data.get(key))


def message_tool(
    obj: dict[str, Any], kind: str, rec: dict[str, Any]
) -> tuple[tuple[str, str] | None, list[dict[str, Any]]]:
    """Fill `rec` with the tool's first message; return (problem, records of the others)."""
    found = _task_messages(obj, kind)
    if found is None:
        return (
            "missing_messages",
            f"{kind} has no {EXPORT_KEYS[kind]} (nor message_evaluation_task.data)",
        ), []
    parent, messages = found
    rec["parent_message_id"] = _str(parent)
    if not messages or not all(isinstance(m, dict) and m.get("message_id") for m in messages):
        return (
            "missing_messages",
            f"{kind} lists no message, or a message without message_id",
        ), []
    records = []
    for i, msg in enumerate(messages):
        out = rec if i == 0 else dict(rec)
        out["message_id"] = _str(msg.get("message_id"))
        out["model_config_name"] = _str(msg.get("model_config_name"))
        if kind == "MessageRanking":
            order = msg.get("order")
            out["rank"] = order if isinstance(order, int) and not isinstance(order, bool) else None
        if i:
            records.append(out)
    if kind == "MessageRanking":
        ranks = sorted(r["rank"] for r in [rec, *records] if r["rank"] is not None)
        if ranks != list(range(1, len(messages) + 1)):
            return ("bad_ranking", f"{kind} orders are not 1..{len(messages)}: {ranks}"), records
    return None, records


def parse_messages(row_data: Any, base: dict[str, Any]) -> list[dict[str, Any]]:
    """Return `messages` records when `row_data` is the conversation JSON itself.

    `base` holds the ids every record carries (data row id, global key).
    """
    conv = _conversation(row_data)
    if conv is None:
        return []
    out: list[dict[str, Any]] = []
    raw = conv.get("messages")
    if isinstance(raw, list):
        _messages_v1(out, base, conv, raw)
    elif isinstance(raw, dict):
        _messages_v2(out, base, conv, raw)
    return out


def _conversation(row_data: Any) -> dict[str, Any] | None:
    conv = row_data
    if isinstance(row_data, str):
        if not row_data.lstrip().startswith("{"):
            return None
        try:
            conv = orjson.loads(row_data)
        except orjson.JSONDecodeError:
            return None
    if not isinstance(conv, dict):
        return None
    kind = conv.get("type")
    if not (isinstance(kind, str) and kind.startswith("application/vnd.labelbox.conversational")):
        return None
    return conv


def _add(
    out: list[dict[str, Any]], base: dict[str, Any], position: int, msg: Any, **cols: Any
) -> None:
    out.append({**base, "position": position, "raw_json": as_json(msg), **cols})


def _messages_v1(
    records: list[dict[str, Any]], base: dict[str, Any], conv: dict[str, Any], raw: list[Any]
) -> None:
    last: str | None = None
    for pos, msg in enumerate(raw):
        msg = msg if isinstance(msg, dict) else {}
        user = _dict(msg.get("user"))
        mid = _str(msg.get("messageId"))
        _add(
            records,
            base,
            pos,
            msg,
            message_id=mid,
            parent_message_id=last,
            role="human",
            actor=_str(user.get("userId")) or _str(user.get("name")),
            content=_content(msg.get("content")),
        )
        last = mid
    # The responses compared in an LLM human preference project: titled "Response A", ...
    for i, output in enumerate(_list(conv.get("modelOutputs"))):
        output = output if isinstance(output, dict) else {}
        _add(
            records,
            base,
            len(raw) + i,
            output,
            message_id=_str(output.get("title")),
            parent_message_id=last,
            role="model",
            model_name=_str(output.get("modelConfigName")),
            content=_content(output.get("content")),
        )


def _messages_v2(
    records: list[dict[str, Any]], base: dict[str, Any], conv: dict[str, Any], raw: dict[str, Any]
) -> None:
    actors = _dict(conv.get("actors"))
    parents: dict[str, str] = {}
    for mid, msg in raw.items():
        for child in _list(msg.get("childMessageIds") if isinstance(msg, dict) else None):
            parents[str(child)] = str(mid)
    for pos, (mid, msg) in enumerate(raw.items()):
        msg = msg if isinstance(msg, dict) else {}
        actor_id = _str(msg.get("actorId"))
        actor = _dict(actors.get(actor_id)) if actor_id is not None else {}
        meta = _dict(actor.get("metadata"))
        _add(
            records,
            base,
            pos,
            msg,
            message_id=str(mid),
            parent_message_id=parents.get(str(mid)),
            role=_str(actor.get("role")),
            actor=actor_id,
            model_name=_str(meta.get("modelConfigName")),
            content=_content(msg.get("content")),
        )


def _content(v: Any) -> str | None:
    """Return a message's text: a string as it is, text parts of a part list joined."""
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, list):
        texts = [
            p.get("content") if isinstance(p, dict) else None
            for p in v
            if isinstance(p, dict) and p.get("type") == "text"
        ]
        return "\n".join(t for t in texts if isinstance(t, str)) or None
    return as_json(v)
