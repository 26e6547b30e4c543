"""Error records: a problem with one piece of input, kept with the ids it belongs to.

A bad line, a corrupt mask or an expired URL never stops a run: it becomes an
`ErrorRecord`, lands in the version's errors file and is reported at the end.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# Error kinds of export input that did not become rows (its raw JSON is kept instead): the
# dataset card and the run's summary count them apart from other problems.
UNPARSED_KINDS: frozenset[str] = frozenset(
    {
        "unknown_annotation_key",
        "unknown_annotation_kind",
        "unknown_answer_shape",
        "unknown_answer_key",
        "unmatched_segments",
        # Video and DICOM (labelhaul.parse_video): kept raw in the error record, not rows.
        "bad_frame_number",
        "frame_entry_without_annotation",
        "unsupported_frame_relationship",
        # Geospatial masks (labelhaul.parse_geo): no documented export shape.
        "unsupported_geo_mask",
    }
)


def unparsed_counts(errors_by_kind: dict[str, int] | None) -> dict[str, int]:
    """Return the error counts of input that did not become rows, by kind."""
    return {k: n for k, n in (errors_by_kind or {}).items() if k in UNPARSED_KINDS}


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
