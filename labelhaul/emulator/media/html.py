"""Synthetic HTML rows: global classifications (radio, checklist, free text, nested).

Labelbox's HTML editor labels whole documents: an HTML row's label has only
`annotations.classifications`, shaped as an image's. No objects, no masks.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from labelhaul.emulator.synthetic import SyntheticSpec, answer, question

MIME_TYPE = "text/html"


# This kind's classifications and answers: feature ids "hc"/"ha", schema ids "csynhtml...".
_q = partial(question, kind="hc", prefix="csynhtml")
_a = partial(answer, kind="ha", prefix="csynhtml")


def build(spec: SyntheticSpec, row: int, base: dict[str, Any]) -> dict[str, Any]:
    """Turn the image-shaped `base` row into an HTML row (see the module docstring)."""
    base["data_row"]["row_data"] = base["data_row"]["row_data"].replace(".png", ".html")
    base["media_attributes"] = {"mime_type": MIME_TYPE, "asset_type": "html"}
    classifications = [
        _q(
            spec,
            row,
            0,
            "page_type",
            radio_answer=_a(
                spec,
                row,
                0,
                ("article", "product", "forum")[row % 3],
                [_q(spec, row, 1, "is_paywalled", radio_answer=_a(spec, row, 1, "no", []))],
            ),
        ),
        _q(
            spec,
            row,
            2,
            "topics",
            checklist_answers=[_a(spec, row, 2, "sports", []), _a(spec, row, 3, "travel", [])],
        ),
        _q(spec, row, 4, "headline", text_answer={"content": f"headline of page {row}"}),
    ]
    for project in base["projects"].values():
        for label in project["labels"]:
            label["annotations"] = {
                "objects": [],
                "classifications": classifications,
                "relationships": [],
            }
    return base


def revise(row: dict[str, Any], number: int) -> None:
    """Relabel as an edit would: the headline is rewritten (revision `number`)."""
    for project in (row.get("projects") or {}).values():
        for label in project.get("labels") or []:
            for q in (label.get("annotations") or {}).get("classifications") or []:
                if q.get("name") == "headline":
                    q["text_answer"]["content"] += f" (revision {number})"
