"""ISO 8601 instants: the one parser, and the one way labelhaul writes a timestamp.

`parse_iso8601` is the grammar (Python 3.11's `datetime.fromisoformat`: `Z` or an offset
gives an aware datetime, no offset a naive one). What a naive value means is the
caller's policy: export timestamps and store markers read it as UTC (`parse_timestamp`),
export filters refuse it unless told otherwise (`export_params.parse_instant`).

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

from datetime import UTC, datetime


def parse_iso8601(text: str) -> datetime:
    """Parse ISO 8601 text (surrounding whitespace ignored); naive when it has no offset.

    Raises:
        ValueError: not an ISO 8601 date or date-time.
    """
    return datetime.fromisoformat(text.strip())


def parse_timestamp(value: object) -> datetime | None:
    """Return `value` as an aware UTC datetime (naive read as UTC), or None if not ISO 8601."""
    if not isinstance(value, str):
        return None
    try:
        when = parse_iso8601(value)
    except ValueError:
        return None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def format_timestamp(dt: datetime) -> str:
    """Format an instant as ISO 8601 UTC with milliseconds and a `Z`."""
    dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
