"""The one ISO 8601 parser, on the inputs the four parsers it replaces accepted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from labelhaul.errors import FilterError
from labelhaul.export_params import parse_instant
from labelhaul.timestamps import format_timestamp, parse_iso8601, parse_timestamp

PLUS2 = timezone(timedelta(hours=2))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-04-08T16:34:01.000Z", datetime(2024, 4, 8, 16, 34, 1, tzinfo=UTC)),
        ("2024-04-08T16:34:01Z", datetime(2024, 4, 8, 16, 34, 1, tzinfo=UTC)),
        ("2024-04-08T16:34:01.5Z", datetime(2024, 4, 8, 16, 34, 1, 500_000, tzinfo=UTC)),
        ("2024-04-08T16:34:01.000+00:00", datetime(2024, 4, 8, 16, 34, 1, tzinfo=UTC)),
        ("2024-04-08T18:34:01+02:00", datetime(2024, 4, 8, 18, 34, 1, tzinfo=PLUS2)),
        ("2024-04-08T18:34:01+0200", datetime(2024, 4, 8, 18, 34, 1, tzinfo=PLUS2)),
        ("2024-04-08 16:34:01+00:00", datetime(2024, 4, 8, 16, 34, 1, tzinfo=UTC)),
        (" 2024-04-08T16:34:01Z\n", datetime(2024, 4, 8, 16, 34, 1, tzinfo=UTC)),
        ("2024-04-08T16:34:01", datetime(2024, 4, 8, 16, 34, 1)),  # naive stays naive
        ("2024-04-08", datetime(2024, 4, 8)),
    ],
)
def test_parse_iso8601_accepts_z_offsets_and_naive(text: str, expected: datetime) -> None:
    got = parse_iso8601(text)
    assert got == expected
    assert (got.tzinfo is None) is (expected.tzinfo is None)
    assert got.utcoffset() == expected.utcoffset()


@pytest.mark.parametrize(
    "text",
    ["", "yesterday", "2024-13-01T00:00:00Z", "2024-04-08T16:34:01z", "2024-05-01Z"],
)
def test_parse_iso8601_refuses_what_is_not_iso(text: str) -> None:
    with pytest.raises(ValueError):
        parse_iso8601(text)


def test_parse_timestamp_is_utc_reads_naive_as_utc_and_never_raises() -> None:
    # Export timestamps, gc markers, emulator rows: the lenient policy of the old three.
    got = parse_timestamp("2024-04-08T18:00:00.000+02:00")
    assert got is not None and got.tzinfo is UTC
    assert got == datetime(2024, 4, 8, 16, tzinfo=UTC)
    assert parse_timestamp("2024-04-08T16:00:00") == datetime(2024, 4, 8, 16, tzinfo=UTC)
    assert parse_timestamp("2024-04-08T16:00:00.000Z") == datetime(2024, 4, 8, 16, tzinfo=UTC)
    for bad in ("", "not a date", None, 17, ["2024-04-08"]):
        assert parse_timestamp(bad) is None


def test_format_then_parse_round_trips_to_the_millisecond() -> None:
    when = datetime(2024, 4, 8, 18, 0, 0, 123_456, tzinfo=PLUS2)
    text = format_timestamp(when)
    assert text == "2024-04-08T16:00:00.123Z"
    assert parse_timestamp(text) == when.replace(microsecond=123_000)


def test_filters_keep_their_offset_and_refuse_naive_unless_read_as_utc() -> None:
    # export_params.parse_instant: the same grammar, the filter's own naive policy.
    assert parse_instant("2024-05-01T00:00:00+02:00").utcoffset() == timedelta(hours=2)
    assert parse_instant(" 2024-05-01T00:00:00Z ") == datetime(2024, 5, 1, tzinfo=UTC)
    with pytest.raises(FilterError, match="no timezone"):
        parse_instant("2024-05-01T00:00:00")
    assert parse_instant("2024-05-01T00:00:00", naive_dates_as_utc=True) == datetime(
        2024, 5, 1, tzinfo=UTC
    )
    with pytest.raises(FilterError, match="not ISO 8601"):
        parse_instant("2024-05-01Z")
