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

Streams the `classifications` table, whose rows of one label are contiguous (they come
from one export line): memory holds one label's answers.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
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


@dataclass
class PreferenceSummary:
    """What a preference file holds: pairs, labels with a preference, labels skipped."""

    pairs: int = 0
    labels: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def facts(self) -> dict[str, Any]:
        """Return the manifest's `preference` facts."""
        return {
            "format": "trl-preference-explicit-prompt",
            "pairs": self.pairs,
            "labels": self.labels,
            "skipped": dict(sorted(self.skipped.items())),
        }


def write_preference(path: Path, classifications: Iterable[dict[str, Any]]) -> PreferenceSummary:
    """Write the preference JSONL from `classifications` records; return what it holds.

    The same records in the same order always give the same bytes.
    """
    summary = PreferenceSummary()
    with path.open("wb") as fh:
        for (_, label_id), recs in itertools.groupby(classifications, key=_label_key):
            if label_id is None:
                continue
            for line in _pairs(list(recs), summary):
                fh.write(orjson.dumps(line) + b"\n")
    return summary


def _label_key(rec: dict[str, Any]) -> tuple[str, str | None]:
    label = rec.get("label_id") if rec.get("source") == "label" else None
    return (rec["data_row_id"], label)


def _pairs(recs: list[dict[str, Any]], summary: PreferenceSummary) -> list[dict[str, Any]]:
    top = [r for r in recs if r.get("scope") == "global" and r.get("depth") == 0]
    texts: dict[str, str] = {}
    for r in top:
        name = r.get("question_name")
        if r.get("answer_kind") == "text" and name and r.get("text") is not None:
            texts.setdefault(name, r["text"])
    radios = [r for r in top if r.get("answer_kind") == "radio" and r.get("answer_name") in texts]
    if not radios:
        return []
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
    out = []
    for name in rejected:
        out.append(
            {
                "prompt": prompts[0],
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


def _stem(name: str) -> str:
    """Return a response name without its last word ("Response A" -> "Response")."""
    parts = name.rsplit(maxsplit=1)
    return parts[0] if len(parts) == 2 else name
