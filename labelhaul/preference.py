"""Preference pairs (chosen / rejected) as JSONL for DPO-style trainers (#16).

One line per (label, rejected response), in TRL's preference format with an explicit
prompt (`DPOTrainer` reads `prompt`, `chosen`, `rejected`), plus the ids a user needs to
trace a pair back (`data_row_id`, `global_key`, `label_id`, the responses' names, the
labeler's reason):

    {"prompt": "...", "chosen": "...", "rejected": "...", "data_row_id": "...", ...}

A pair is built from a label's global classifications as Labelbox exports an LLM
preference / response creation label: a free-text prompt (a question whose name contains
"prompt"), free-text responses, and a radio (the preference, "Choose the best response")
whose answer names one response ("Response B"). The responses are the text questions
named like the chosen answer but for the last word ("Response A", "Response B", ...), so
no ontology has to be configured. A free-text question whose name contains "reason" is
the reason. A label with a preference but no prompt or no other response gives no pair
and is counted (`skipped`). Ground truth only (`source` "label"); predictions are left out.

An LLM human preference label (Labelbox's real shape) has only the radio and the reason:
the prompt and responses are in the conversation `row_data` names, which the sync fetches
into the `messages` table (labelhaul.row_content). Then the responses are the model
outputs whose titles the radio's answer names ("Response B" chosen, the other titles
rejected), and the prompt is the message the responses answer (their
`parent_message_id`: the last message before the model outputs; earlier turns stay in
`messages`). A label whose radio asks for the best or preferred response, on a row with no
conversation, is counted as `no_conversation` (the manifest's
`preference.conversation_rows` says why the conversation is missing).

Streams the `classifications` table, whose rows of one label are contiguous (they come
from one export line), beside the `messages` table in the same data row order (as the
sync writes every table): memory holds one label's answers and one row's messages.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

COLUMNS = (
    "data_row_id",
    "global_key",
    "label_id",
    "source",
    "scope",
    "depth",
    "answer_kind",
    "question_name",
    "answer_name",
    "text",
)
MESSAGE_COLUMNS = ("data_row_id", "message_id", "parent_message_id", "role", "content")
# A radio question naming one of these asks which response is preferred.
_PREFERENCE_WORDS = ("best", "prefer")


@dataclass
class PreferenceSummary:
    """What a preference file holds: pairs, labels with a preference, labels skipped."""

    pairs: int = 0
    labels: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    # Labels whose pairs came from text answers / from the fetched conversation.
    from_answers: int = 0
    from_conversation: int = 0

    def facts(self) -> dict[str, Any]:
        """Return the manifest's `preference` facts."""
        return {
            "format": "trl-preference-explicit-prompt",
            "pairs": self.pairs,
            "labels": self.labels,
            "skipped": dict(sorted(self.skipped.items())),
            "labels_from": {"answers": self.from_answers, "conversation": self.from_conversation},
        }


def write_preference(
    path: Path,
    classifications: Iterable[dict[str, Any]],
    messages: Iterable[dict[str, Any]] | None = None,
    data_row_ids: Iterable[str] | None = None,
) -> PreferenceSummary:
    """Write the preference JSONL from `classifications` (and `messages`) records.

    `data_row_ids` is every data row id in table order (`data_rows`), needed with
    `messages`. Returns what the file holds; the same records in the same order always
    give the same bytes.
    """
    summary = PreferenceSummary()
    conversations = Conversations(iter(data_row_ids or ()), iter(messages or ()))
    with path.open("wb") as fh:
        for (_, label_id), recs in itertools.groupby(classifications, key=_label_key):
            if label_id is None:
                continue
            for line in _pairs(list(recs), summary, conversations):
                fh.write(orjson.dumps(line) + b"\n")
    return summary


class Conversations:
    """Walk `messages` alongside `classifications`, in `data_rows` order: a row's messages.

    Not every data row has messages, so the walk steps through every data row id (the
    `data_rows` table, in the order the sync writes every table) and takes a row's messages
    only when they are next: a row without messages never makes it skip a later row's.
    """

    def __init__(self, data_row_ids: Iterator[str], records: Iterator[dict[str, Any]]) -> None:
        self._ids = data_row_ids
        self._records = records
        self._current: tuple[str, list[dict[str, Any]]] | None = None
        self._head: dict[str, Any] | None = next(records, None)

    def find(self, drid: str) -> list[dict[str, Any]]:
        """Return `drid`'s messages (empty when it has none); ask in table order."""
        if self._current is not None and self._current[0] == drid:
            return self._current[1]
        for rid in self._ids:
            group: list[dict[str, Any]] = []
            while self._head is not None and str(self._head["data_row_id"]) == rid:
                group.append(self._head)
                self._head = next(self._records, None)
            if rid == drid:
                self._current = (rid, group)
                return group
        return []


def _label_key(rec: dict[str, Any]) -> tuple[str, str | None]:
    label = rec.get("label_id") if rec.get("source") == "label" else None
    return (rec["data_row_id"], label)


def _pairs(
    recs: list[dict[str, Any]], summary: PreferenceSummary, conversations: Conversations
) -> list[dict[str, Any]]:
    top = [r for r in recs if r.get("scope") == "global" and r.get("depth") == 0]
    texts: dict[str, str] = {}
    for r in top:
        name = r.get("question_name")
        if r.get("answer_kind") == "text" and name and r.get("text") is not None:
            texts.setdefault(name, r["text"])
    radios = [r for r in top if r.get("answer_kind") == "radio" and r.get("answer_name") in texts]
    if not radios:
        return _conversation_pairs(top, texts, summary, conversations)
    summary.labels += 1
    choice = radios[0]
    chosen_name = str(choice["answer_name"])
    stem = _stem(chosen_name)
    responses = {n: t for n, t in texts.items() if _stem(n) == stem}
    prompts = [t for n, t in texts.items() if "prompt" in n.lower() and n not in responses]
    reasons = [t for n, t in texts.items() if "reason" in n.lower() and n not in responses]
    rejected = sorted(n for n in responses if n != chosen_name)
    if not prompts:
        summary.skipped["no_prompt"] = summary.skipped.get("no_prompt", 0) + 1
        return []
    if not rejected:
        summary.skipped["no_other_response"] = summary.skipped.get("no_other_response", 0) + 1
        return []
    summary.from_answers += 1
    return _lines(choice, prompts[0], responses, rejected, reasons, summary)


def _lines(
    choice: dict[str, Any],
    prompt: str,
    responses: dict[str, str],
    rejected: list[str],
    reasons: list[str],
    summary: PreferenceSummary,
) -> list[dict[str, Any]]:
    chosen_name = str(choice["answer_name"])
    out = []
    for name in rejected:
        out.append(
            {
                "prompt": prompt,
                "chosen": responses[chosen_name],
                "rejected": responses[name],
                "data_row_id": choice["data_row_id"],
                "global_key": choice.get("global_key"),
                "label_id": choice.get("label_id"),
                "preference_question": choice.get("question_name"),
                "chosen_name": chosen_name,
                "rejected_name": name,
                "reason": reasons[0] if reasons else None,
            }
        )
    summary.pairs += len(out)
    return out


def _conversation_pairs(
    top: list[dict[str, Any]],
    texts: dict[str, str],
    summary: PreferenceSummary,
    conversations: Conversations,
) -> list[dict[str, Any]]:
    """Return a label's pairs from its row's conversation (radio and reason only)."""
    radios = [r for r in top if r.get("answer_kind") == "radio" and r.get("answer_name")]
    if not radios:
        return []
    messages = conversations.find(str(radios[0]["data_row_id"]))
    outputs = {
        str(m["message_id"]): m
        for m in messages
        if m.get("role") == "model" and m.get("message_id") is not None
    }
    choice = next((r for r in radios if r.get("answer_name") in outputs), None)
    if choice is None:
        asks = any(
            w in str(r.get("question_name") or "").lower()
            for r in radios
            for w in _PREFERENCE_WORDS
        )
        if asks and not outputs:
            summary.labels += 1
            summary.skipped["no_conversation"] = summary.skipped.get("no_conversation", 0) + 1
        return []  # a radio about something else (multimodal chat answers, ...)
    summary.labels += 1
    chosen = outputs[str(choice["answer_name"])]
    by_id = {str(m["message_id"]): m for m in messages if m.get("message_id") is not None}
    parent = by_id.get(str(chosen.get("parent_message_id")))
    humans = [m for m in messages if m.get("role") == "human"]
    prompt_msg = parent if parent is not None else (humans[-1] if humans else None)
    prompt = prompt_msg.get("content") if prompt_msg is not None else None
    if not isinstance(prompt, str):
        summary.skipped["no_prompt"] = summary.skipped.get("no_prompt", 0) + 1
        return []
    responses = {n: str(m.get("content") or "") for n, m in outputs.items()}
    rejected = sorted(n for n in outputs if n != choice["answer_name"])
    if not rejected:
        summary.skipped["no_other_response"] = summary.skipped.get("no_other_response", 0) + 1
        return []
    reasons = [t for n, t in texts.items() if "reason" in n.lower()]
    summary.from_conversation += 1
    return _lines(choice, prompt, responses, rejected, reasons, summary)


def _stem(name: str) -> str:
    """Return a response name without its last word ("Response A" -> "Response")."""
    parts = name.rsplit(maxsplit=1)
    return parts[0] if len(parts) == 2 else name
