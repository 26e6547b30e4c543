"""Export params, filters, dates and id splitting: the dicts handed to the labelbox SDK."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from labelbox.schema.export_filters import convert_to_utc_if_iso8061, validate_datetime
from labelbox.schema.media_type import MediaType

from labelhaul.errors import FilterError
from labelhaul.export_params import (
    MAX_IDS_PER_EXPORT,
    DateRange,
    ExportFilters,
    ExportParams,
    WorkflowStatus,
    build_filter_dicts,
    export_count,
    format_range,
    parse_instant,
    split_ids,
)

SEED_PARAMS = (
    "attachments",
    "metadata_fields",
    "data_row_details",
    "project_details",
    "label_details",
    "performance_details",
    "interpolated_frames",
)


def test_default_params_include_nothing() -> None:
    d = ExportParams().to_project_params()
    assert all(v is False for k, v in d.items() if k != "media_type_override")
    assert d["media_type_override"] is None


@pytest.mark.parametrize("name", [*SEED_PARAMS, "embeddings"])
def test_each_project_param_is_set_alone(name: str) -> None:
    d = ExportParams(**{name: True}).to_project_params()  # type: ignore[arg-type]
    assert d[name] is True
    assert [k for k, v in d.items() if v is True] == [name]


def test_all_params_cover_the_seed() -> None:
    d = ExportParams.all().to_project_params()
    for name in SEED_PARAMS:
        assert d[name] is True
    assert d["embeddings"] is True


@pytest.mark.parametrize(
    "name",
    [
        "attachments",
        "metadata_fields",
        "data_row_details",
        "embeddings",
        "predictions",
        "model_run_details",
    ],
)
def test_model_run_params(name: str) -> None:
    d = ExportParams(**{name: True}).to_model_run_params()  # type: ignore[arg-type]
    assert d[name] is True
    assert "project_details" not in d and "label_details" not in d


def test_media_type_override_by_name_or_value() -> None:
    assert (
        ExportParams(media_type_override="Image").to_project_params()["media_type_override"]
        is MediaType.Image
    )
    assert (
        ExportParams(media_type_override="IMAGE").to_model_run_params()["media_type_override"]
        == "IMAGE"
    )
    with pytest.raises(FilterError, match="media_type_override"):
        ExportParams(media_type_override="HOLOGRAM").to_project_params()


def test_no_filters_is_one_empty_export() -> None:
    assert build_filter_dicts(ExportFilters()) == [{}]


@pytest.mark.parametrize("status", list(WorkflowStatus))
def test_workflow_status(status: WorkflowStatus) -> None:
    [d] = build_filter_dicts(ExportFilters(workflow_status=status))
    assert d == {"workflow_status": status.value}
    [d] = build_filter_dicts(ExportFilters(workflow_status=status.value.lower()))
    assert d == {"workflow_status": status.value}


def test_unknown_workflow_status_names_the_choices() -> None:
    with pytest.raises(FilterError, match="ToLabel, InReview, InRework, Done"):
        ExportFilters(workflow_status="Reviewed")


def test_batch_ids() -> None:
    [d] = build_filter_dicts(ExportFilters(batch_ids=["b1", "b2", "b1"]))
    assert d == {"batch_ids": ["b1", "b2"]}


def test_too_many_batch_ids_refused() -> None:
    with pytest.raises(FilterError, match="at most 2000"):
        ExportFilters(batch_ids=[f"b{i}" for i in range(MAX_IDS_PER_EXPORT + 1)])


@pytest.mark.parametrize("kind", ["data_row_ids", "global_keys"])
def test_ids_filter(kind: str) -> None:
    [d] = build_filter_dicts(ExportFilters(**{kind: ["a", "b"]}))  # type: ignore[arg-type]
    assert d == {kind: ["a", "b"]}


def test_both_id_kinds_refused_with_the_fix() -> None:
    with pytest.raises(FilterError, match="not both"):
        ExportFilters(data_row_ids=["a"], global_keys=["k"])


@pytest.mark.parametrize("bad", [[], "abc", ["ok", ""]])
def test_bad_id_lists_refused(bad: object) -> None:
    with pytest.raises(FilterError):
        ExportFilters(data_row_ids=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("n", "parts"), [(1, 1), (1999, 1), (2000, 1), (2001, 2), (4000, 2), (4001, 3)]
)
def test_id_splitting_at_the_2000_boundary(n: int, parts: int) -> None:
    ids = [f"dr{i}" for i in range(n)]
    filters = ExportFilters(global_keys=ids, workflow_status="Done")
    dicts = build_filter_dicts(filters)
    assert len(dicts) == parts == export_count(filters)
    assert all(len(d["global_keys"]) <= 2000 for d in dicts)
    assert [k for d in dicts for k in d["global_keys"]] == ids
    # Other filters apply to every part.
    assert all(d["workflow_status"] == "Done" for d in dicts)


def test_split_ids_drops_repeats() -> None:
    assert split_ids(["a", "b", "a", "c"], limit=2) == [["a", "b"], ["c"]]


# ---------------------------------------------------------------- dates


def test_offset_input_is_converted_into_the_user_timezone() -> None:
    rng = DateRange("2024-05-01T12:00:00+02:00", "2024-05-02T00:00:00Z")
    [d] = build_filter_dicts(ExportFilters(last_activity_at=rng), user_timezone="America/New_York")
    # 10:00 UTC is 06:00 EDT; 00:00 UTC is 20:00 EDT the day before.
    assert d["last_activity_at"] == ["2024-05-01 06:00:00", "2024-05-01 20:00:00"]


def test_aware_datetimes_and_open_ends() -> None:
    start = datetime(2024, 1, 15, 9, 30, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    [d] = build_filter_dicts(
        ExportFilters(label_created_at=DateRange(start=start)), user_timezone="Europe/Paris"
    )
    assert d["label_created_at"] == ["2024-01-15 05:00:00", None]
    [d] = build_filter_dicts(
        ExportFilters(label_created_at=DateRange(end="2024-01-15T00:00:00Z")),
        user_timezone=None,
    )
    assert d["label_created_at"] == [None, "2024-01-15 00:00:00"]


def test_naive_dates_refused_with_the_fix() -> None:
    with pytest.raises(FilterError, match="LABELHAUL_NAIVE_DATES_AS_UTC"):
        build_filter_dicts(
            ExportFilters(last_activity_at=DateRange("2024-05-01 00:00:00", None)),
            user_timezone="UTC",
        )
    with pytest.raises(FilterError, match="no timezone"):
        parse_instant(datetime(2024, 5, 1))


def test_naive_dates_read_as_utc_when_asked() -> None:
    [d] = build_filter_dicts(
        ExportFilters(last_activity_at=DateRange("2024-05-01", "2024-05-01T12:00:00")),
        user_timezone="Asia/Tokyo",
        naive_dates_as_utc=True,
    )
    assert d["last_activity_at"] == ["2024-05-01 09:00:00", "2024-05-01 21:00:00"]


def test_not_iso_refused() -> None:
    with pytest.raises(FilterError, match="ISO 8601"):
        parse_instant("yesterday")


def test_reversed_range_refused() -> None:
    with pytest.raises(FilterError, match="swap"):
        build_filter_dicts(
            ExportFilters(last_activity_at=DateRange("2024-05-02T00:00:00Z", "2024-05-01T00:00Z"))
        )


def test_fractional_seconds_widen_the_range() -> None:
    start = datetime(2024, 5, 1, 0, 0, 0, 500_000, tzinfo=UTC)
    end = datetime(2024, 5, 1, 1, 0, 0, 500_000, tzinfo=UTC)
    assert format_range(start, end, UTC) == ("2024-05-01 00:00:00", "2024-05-01 01:00:01")


@pytest.mark.parametrize(
    "instant",
    [
        datetime(2024, 3, 10, 6, 59, 59, tzinfo=UTC),  # 01:59:59 EST, just before spring-forward
        datetime(2024, 3, 10, 7, 0, 0, tzinfo=UTC),  # 03:00 EDT, just after
        datetime(2024, 11, 3, 4, 59, 59, tzinfo=UTC),  # 00:59:59 EDT, before the repeated hour
        datetime(2024, 11, 3, 7, 0, 0, tzinfo=UTC),  # 02:00 EST, after it
    ],
)
def test_dst_edges_round_trip_through_the_user_wall_clock(instant: datetime) -> None:
    ny = ZoneInfo("America/New_York")
    start, _ = format_range(instant, None, ny)
    assert start is not None and "T" not in start
    # What the server does with it: read the naive string in the user's timezone.
    back = datetime.strptime(start, "%Y-%m-%d %H:%M:%S").replace(tzinfo=ny)
    assert back == instant


@pytest.mark.parametrize("minute", [0, 30, 59])
@pytest.mark.parametrize("hour_utc", [5, 6])  # 01:xx EDT and 01:xx EST: the same wall clock
def test_dst_repeated_hour_goes_as_utc(hour_utc: int, minute: int) -> None:
    ny = ZoneInfo("America/New_York")
    instant = datetime(2024, 11, 3, hour_utc, minute, tzinfo=UTC)
    start, end = format_range(instant, instant + timedelta(days=1), ny)
    assert start == f"2024-11-03T{hour_utc:02d}:{minute:02d}:00+0000"
    # Both bounds switch together: the SDK sends one timezone per range.
    assert end is not None and end.endswith("+0000")
    # The SDK accepts the form, keeps it verbatim and labels it UTC: the instant survives.
    assert validate_datetime(start)
    value, tz = convert_to_utc_if_iso8061(start, "America/New_York")
    assert tz == "UTC"
    assert datetime.strptime(value, "%Y-%m-%dT%H:%M:%S%z") == instant


def test_unknown_user_timezone_falls_back_to_utc_form() -> None:
    [d] = build_filter_dicts(
        ExportFilters(last_activity_at=DateRange("2024-05-01T00:00:00Z", None)),
        user_timezone="Mars/Olympus_Mons",
    )
    assert d["last_activity_at"] == ["2024-05-01T00:00:00+0000", None]


def test_has_dates() -> None:
    assert not ExportFilters().has_dates
    assert not ExportFilters(last_activity_at=DateRange()).has_dates
    assert ExportFilters(label_created_at=DateRange(end="2024-01-01T00:00:00Z")).has_dates


def test_resolve_filter_dates_refuses_naive_dates_naming_the_fix() -> None:
    from labelhaul.export_params import resolve_filter_dates

    naive = ExportFilters(last_activity_at=DateRange(start=datetime(2024, 1, 1)))
    with pytest.raises(FilterError, match="LABELHAUL_NAIVE_DATES_AS_UTC=true"):
        resolve_filter_dates(naive)
    text = ExportFilters(label_created_at=DateRange(end="2024-01-01T00:00:00"))
    with pytest.raises(FilterError, match="has no timezone"):
        resolve_filter_dates(text)


def test_resolve_filter_dates_reads_naive_dates_as_utc_when_asked() -> None:
    from labelhaul.export_params import resolve_filter_dates

    filters = ExportFilters(
        last_activity_at=DateRange(start=datetime(2024, 1, 1), end="2024-02-01T00:00:00+02:00"),
        workflow_status="Done",
    )
    resolved = resolve_filter_dates(filters, naive_dates_as_utc=True)
    assert resolved.last_activity_at == DateRange(
        start=datetime(2024, 1, 1, tzinfo=UTC),
        end=datetime(2024, 1, 31, 22, tzinfo=UTC),
    )
    assert resolved.workflow_status == "Done"


def test_filters_from_parameters_reads_flow_values_and_deployment_json() -> None:
    from labelhaul.export_params import WorkflowStatus, filters_from_parameters, filters_key

    from_flow = filters_from_parameters(
        {
            "workflow_status": WorkflowStatus.DONE,
            "last_activity_start": datetime(2024, 1, 1, tzinfo=UTC),
            "batch_ids": ["b2", "b1"],
            "project_id": "ignored",
        }
    )
    from_json = filters_from_parameters(
        {
            "workflow_status": "Done",
            "last_activity_start": "2024-01-01T01:00:00+01:00",
            "batch_ids": ["b1", "b2", "b1"],
            "data_row_ids": [],
        }
    )
    assert (
        filters_key(from_flow)
        == filters_key(from_json)
        == {
            "last_activity_at": {"start": "2024-01-01T00:00:00.000000Z"},
            "workflow_status": "Done",
            "batch_ids": ["b1", "b2"],
        }
    )
    assert filters_key(filters_from_parameters({})) == filters_key(None) == {}
