"""Small coercions for loosely typed export JSON: never raise on a wrong type.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

from typing import Any

import orjson


def as_dict(v: Any) -> dict[str, Any]:
    """Return `v` if it is a dict, else an empty one."""
    return v if isinstance(v, dict) else {}


def as_list(v: Any) -> list[Any]:
    """Return `v` if it is a list, else an empty one."""
    return v if isinstance(v, list) else []


def as_str(v: Any) -> str | None:
    """Return `v` as text (None stays None)."""
    if v is None:
        return None
    return v if isinstance(v, str) else str(v)


def as_json(v: Any) -> str:
    """Return `v` as JSON text with sorted keys: the `raw_json` columns' one encoding."""
    return orjson.dumps(v, option=orjson.OPT_SORT_KEYS).decode()
