"""The seed: Labelbox's documented export formats, shipped with the package.

`labelhaul/data/labelbox-export-formats.txt` is a copy of the export-format page we build
against: one example per annotation kind, a sample project export and a sample model-run
export. Its JSON is not strict: embedding vectors are elided with `...` and one example has
`//` comments. This module extracts each JSON object, cleaned so that it parses.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from importlib import resources
from typing import Any

PROJECT_EXPORT_TITLE = "Sample project export"
MODEL_RUN_EXPORT_TITLE = "Sample model run export"

_ELISION = re.compile(r"\s*\.\.\.\s*$")


def load_seed_text() -> str:
    """Return the seed document's text."""
    return (resources.files("labelhaul") / "data" / "labelbox-export-formats.txt").read_text(
        encoding="utf-8"
    )


def _clean_line(line: str) -> str | None:
    stripped = line.strip()
    if stripped.startswith("//"):
        return None
    # `1.893491997791636 ...` ends an elided list: keep the value, drop the elision.
    return _ELISION.sub("", line)


@lru_cache(maxsize=1)
def seed_objects() -> tuple[tuple[str, dict[str, Any]], ...]:
    """Return every top-level JSON object of the seed as (title, object), in order.

    The title is the last prose line before the object (e.g. "Polygon",
    "Sample project export").
    """
    out: list[tuple[str, dict[str, Any]]] = []
    title = ""
    buf: list[str] = []
    depth = 0
    for raw in load_seed_text().splitlines():
        if depth == 0:
            if raw.strip() == "{":
                buf = [raw]
                depth = 1
                continue
            if raw.strip() and not raw.strip().startswith(("}", "]", '"')):
                title = raw.strip()
            continue
        line = _clean_line(raw)
        if line is None:
            continue
        depth += _brace_delta(line)
        buf.append(line)
        if depth == 0:
            out.append((title, json.loads("\n".join(buf))))
    return tuple(out)


def _brace_delta(line: str) -> int:
    delta = 0
    in_str = False
    escaped = False
    for ch in line:
        if in_str:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch == "{":
            delta += 1
        elif ch == "}":
            delta -= 1
    return delta


def _by_title(title: str) -> dict[str, Any]:
    for t, obj in seed_objects():
        if t == title:
            copy: dict[str, Any] = json.loads(json.dumps(obj))  # a fresh copy each call
            return copy
    raise KeyError(title)


def sample_project_export() -> dict[str, Any]:
    """The seed's sample project export: one data row (a fresh copy)."""
    return _by_title(PROJECT_EXPORT_TITLE)


def sample_model_run_export() -> dict[str, Any]:
    """The seed's sample model-run export: one data row (a fresh copy)."""
    return _by_title(MODEL_RUN_EXPORT_TITLE)
