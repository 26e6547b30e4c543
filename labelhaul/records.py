"""Error records: a problem with one piece of input, kept with the ids it belongs to.

A bad line, a corrupt mask or an expired URL never stops a run: it becomes an
`ErrorRecord`, lands in the version's errors file and is reported at the end.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class ErrorRecord:
    """One problem with one piece of input."""

    stage: str  # "export", "parse", "mask", "store", ...
    kind: str  # short machine-readable reason, e.g. "malformed_line", "mask_404"
    message: str  # what happened and, where useful, what to do
    data_row_id: str | None = None
    label_id: str | None = None
    feature_id: str | None = None
    global_key: str | None = None
    offset: int | None = None  # byte offset in the export stream, when known
    extra: dict[str, Any] = field(default_factory=dict)
    severity: str = "error"  # "error" or "warning"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
