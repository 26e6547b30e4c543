"""Typed export params and filters, and the dicts the labelbox SDK's `export` takes.

Pure logic, no network: `labelhaul.export` asks Labelbox for the user's timezone and
passes it in. Two Labelbox quirks shape the date handling (docs/ARCHITECTURE.md):

- the server reads a naive date string in the API-key owner's timezone (the SDK sends
  that zone, from `CurrentUserPyApi`, next to the value);
- the SDK does not convert an ISO string with an offset: it keeps the wall clock, swaps
  the offset for `+0000` and sends timezone `UTC`, so `10:00+02:00` silently means 10:00 UTC.

So an instant is converted into the user's timezone and sent as a naive wall clock
there. A wall clock that zone shows twice (the hour repeated when DST ends) cannot name
one instant; then both bounds of that range go as UTC with `+0000`, which the SDK keeps
verbatim and labels `UTC`, so either reading of the offset names the right instant.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, tzinfo
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from labelhaul.errors import ConfigError, FilterError
from labelhaul.timestamps import parse_iso8601

# Labelbox refuses more ids than this in one export (SDK: SEARCH_LIMIT_PER_EXPORT_V2).
MAX_IDS_PER_EXPORT = 2_000

_NAIVE_FORMAT = "%Y-%m-%d %H:%M:%S"
# The SDK's ISO_8061_FORMAT: the only offset form it accepts.
_UTC_FORMAT = "%Y-%m-%dT%H:%M:%S+0000"


class WorkflowStatus(StrEnum):
    """Where a data row is in the project's review workflow."""

    TO_LABEL = "ToLabel"
    IN_REVIEW = "InReview"
    IN_REWORK = "InRework"
    DONE = "Done"


@dataclass(frozen=True)
class ExportParams:
    """Which optional fields an export includes (the seed's seven params, plus embeddings).

    `predictions` and `model_run_details` apply to model-run exports only;
    `project_details`, `label_details`, `performance_details` and `interpolated_frames`
    to project exports only.
    """

    attachments: bool = False
    metadata_fields: bool = False
    data_row_details: bool = False
    project_details: bool = False
    label_details: bool = False
    performance_details: bool = False
    interpolated_frames: bool = False
    embeddings: bool = False
    predictions: bool = False
    model_run_details: bool = False
    media_type_override: str | None = None  # a labelbox MediaType name or value, e.g. "IMAGE"

    @classmethod
    def all(cls) -> ExportParams:
        """Return params that include every optional field."""
        return cls(
            attachments=True,
            metadata_fields=True,
            data_row_details=True,
            project_details=True,
            label_details=True,
            performance_details=True,
            interpolated_frames=True,
            embeddings=True,
            predictions=True,
            model_run_details=True,
        )

    def _media_type(self) -> Any:
        if self.media_type_override is None:
            return None
        from labelbox.schema.media_type import MediaType

        wanted = self.media_type_override
        for member in MediaType:
            if wanted in (member.name, member.value) or wanted.upper() == member.value:
                return member
        names = ", ".join(sorted({m.value for m in MediaType}))
        raise FilterError(f"Unknown media_type_override {wanted!r}: use one of {names}.")

    def to_project_params(self) -> dict[str, Any]:
        """Return the `params` dict of `project.export(params=...)`."""
        return {
            "attachments": self.attachments,
            "metadata_fields": self.metadata_fields,
            "data_row_details": self.data_row_details,
            "project_details": self.project_details,
            "label_details": self.label_details,
            "performance_details": self.performance_details,
            "interpolated_frames": self.interpolated_frames,
            "embeddings": self.embeddings,
            "media_type_override": self._media_type(),
        }

    def to_model_run_params(self) -> dict[str, Any]:
        """Return the `params` dict of `model_run.export(params=...)`."""
        media = self._media_type()
        return {
            "attachments": self.attachments,
            "metadata_fields": self.metadata_fields,
            "data_row_details": self.data_row_details,
            "embeddings": self.embeddings,
            "predictions": self.predictions,
            "model_run_details": self.model_run_details,
            # ModelRun._export sends this value as is (Project._export sends `.value`).
            "media_type_override": media.value if media is not None else None,
        }


DateInput = datetime | str | None


@dataclass(frozen=True)
class DateRange:
    """An inclusive range of instants; either end may be open (None).

    Each end is an aware datetime or an ISO 8601 string with an offset
    (`2024-05-01T00:00:00+02:00`, `...Z`). Naive values are refused unless the caller
    reads them as UTC (`naive_dates_as_utc`).
    """

    start: DateInput = None
    end: DateInput = None


@dataclass(frozen=True)
class ExportFilters:
    """What to export from a project. Filters combine with AND."""

    last_activity_at: DateRange | None = None
    label_created_at: DateRange | None = None
    workflow_status: WorkflowStatus | str | None = None
    batch_ids: Sequence[str] | None = None
    data_row_ids: Sequence[str] | None = None
    global_keys: Sequence[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # passed through to the SDK as is

    def __post_init__(self) -> None:
        if self.data_row_ids is not None and self.global_keys is not None:
            raise FilterError(
                "Give data_row_ids or global_keys, not both: Labelbox accepts one id filter "
                "per export. Export by one kind and filter the other afterwards."
            )
        for name in ("batch_ids", "data_row_ids", "global_keys"):
            ids = getattr(self, name)
            if ids is None:
                continue
            if isinstance(ids, str):
                raise FilterError(f"{name} must be a list of ids, not one string: [{ids!r}].")
            if len(ids) == 0:
                raise FilterError(f"{name} is empty: leave it unset to export everything.")
            if any(not isinstance(i, str) or not i for i in ids):
                raise FilterError(f"{name} must hold non-empty strings.")
        if self.batch_ids is not None and len(self.batch_ids) > MAX_IDS_PER_EXPORT:
            raise FilterError(
                f"batch_ids holds {len(self.batch_ids)} ids; Labelbox accepts at most "
                f"{MAX_IDS_PER_EXPORT} per export. Export fewer batches per run."
            )
        if self.workflow_status is not None:
            parse_workflow_status(self.workflow_status)

    @property
    def has_dates(self) -> bool:
        """Return True when a date filter is set (Labelbox then needs the user's timezone)."""
        return any(
            r is not None and (r.start is not None or r.end is not None)
            for r in (self.last_activity_at, self.label_created_at)
        )


def parse_workflow_status(value: WorkflowStatus | str) -> WorkflowStatus:
    """Return the workflow status named by `value`, or raise FilterError listing the choices."""
    if isinstance(value, WorkflowStatus):
        return value
    for member in WorkflowStatus:
        if value in (member.value, member.name) or value.lower() == member.value.lower():
            return member
    choices = ", ".join(m.value for m in WorkflowStatus)
    raise FilterError(f"Unknown workflow_status {value!r}: use one of {choices}.")


def parse_instant(value: datetime | str, *, naive_dates_as_utc: bool = False) -> datetime:
    """Return `value` as an aware datetime, refusing naive input unless read as UTC.

    Raises:
        FilterError: not ISO 8601, or naive without `naive_dates_as_utc`.
    """
    if isinstance(value, datetime):
        when = value
    else:
        try:
            when = parse_iso8601(value)
        except ValueError as exc:
            raise FilterError(
                f"Date {value!r} is not ISO 8601: write it like 2024-05-01T00:00:00+02:00."
            ) from exc
    if when.tzinfo is None or when.utcoffset() is None:
        if not naive_dates_as_utc:
            raise FilterError(
                f"Date {value!s} has no timezone, and Labelbox would read it in the API-key "
                "owner's timezone. Add an offset (2024-05-01T00:00:00Z or +02:00), or set "
                "LABELHAUL_NAIVE_DATES_AS_UTC=true to read such dates as UTC."
            )
        when = when.replace(tzinfo=UTC)
    return when


def resolve_timezone(name: str | None) -> tzinfo | None:
    """Return the user's timezone from Labelbox's name for it, or None when unknown."""
    if not name:
        return UTC  # the SDK sends "UTC" when the user has none
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _is_ambiguous(local: datetime) -> bool:
    """Return True when the wall clock of `local` occurs twice in its zone."""
    other = local.replace(fold=1 - local.fold)
    return other.utcoffset() != local.utcoffset()


def _whole_seconds(when: datetime, *, up: bool) -> datetime:
    # Labelbox compares at one-second resolution; round outward so the range never shrinks.
    if when.microsecond == 0:
        return when
    floor = when.replace(microsecond=0)
    return floor + timedelta(seconds=1) if up else floor


def format_range(
    start: datetime | None, end: datetime | None, user_tz: tzinfo | None
) -> tuple[str | None, str | None]:
    """Return the SDK strings for an inclusive range of aware instants.

    Naive wall clocks in `user_tz` when both are unambiguous there; otherwise both
    as UTC with `+0000` (see the module docstring for why).
    """
    ends = [
        _whole_seconds(start, up=False) if start is not None else None,
        _whole_seconds(end, up=True) if end is not None else None,
    ]
    if user_tz is not None:
        local = [e.astimezone(user_tz) if e is not None else None for e in ends]
        if not any(lo is not None and _is_ambiguous(lo) for lo in local):
            return tuple(  # type: ignore[return-value]
                lo.strftime(_NAIVE_FORMAT) if lo is not None else None for lo in local
            )
    return tuple(  # type: ignore[return-value]
        e.astimezone(UTC).strftime(_UTC_FORMAT) if e is not None else None for e in ends
    )


def split_ids(ids: Sequence[str], limit: int | None = None) -> list[list[str]]:
    """Split `ids` into slices Labelbox accepts in one export, dropping repeats, order kept.

    `limit` defaults to `MAX_IDS_PER_EXPORT`, read when called (tests lower it).
    """
    limit = MAX_IDS_PER_EXPORT if limit is None else limit
    if limit < 1:
        raise ValueError("limit must be positive")
    unique = list(dict.fromkeys(ids))
    return [unique[i : i + limit] for i in range(0, len(unique), limit)]


def build_filter_dicts(
    filters: ExportFilters,
    *,
    user_timezone: str | None = None,
    naive_dates_as_utc: bool = False,
    id_limit: int | None = None,
) -> list[dict[str, Any]]:
    """Return one SDK `filters` dict per export needed (more than one when ids are split).

    Args:
        filters: what to export.
        user_timezone: the API-key owner's timezone (`CurrentUserPyApi`); needed when
            `filters.has_dates`.
        naive_dates_as_utc: read dates without an offset as UTC instead of refusing them.
        id_limit: ids per export (None: Labelbox's limit, `MAX_IDS_PER_EXPORT`).

    Raises:
        FilterError: a filter Labelbox would refuse or misread.
    """
    base: dict[str, Any] = dict(filters.extra)
    tz = resolve_timezone(user_timezone)
    for name in ("last_activity_at", "label_created_at"):
        rng: DateRange | None = getattr(filters, name)
        if rng is None or (rng.start is None and rng.end is None):
            continue
        start = (
            parse_instant(rng.start, naive_dates_as_utc=naive_dates_as_utc)
            if rng.start is not None
            else None
        )
        end = (
            parse_instant(rng.end, naive_dates_as_utc=naive_dates_as_utc)
            if rng.end is not None
            else None
        )
        if start is not None and end is not None and start > end:
            raise FilterError(
                f"{name} starts after it ends ({start.isoformat()} > {end.isoformat()}): "
                "swap the bounds."
            )
        base[name] = list(format_range(start, end, tz))
    if filters.workflow_status is not None:
        base["workflow_status"] = parse_workflow_status(filters.workflow_status).value
    if filters.batch_ids is not None:
        base["batch_ids"] = list(dict.fromkeys(filters.batch_ids))
    id_name, ids = _id_filter(filters)
    if ids is None:
        return [base]
    return [{**base, id_name: part} for part in split_ids(ids, id_limit)]


def _id_filter(filters: ExportFilters) -> tuple[str, Sequence[str] | None]:
    if filters.data_row_ids is not None:
        return "data_row_ids", filters.data_row_ids
    return "global_keys", filters.global_keys


def export_count(filters: ExportFilters, id_limit: int | None = None) -> int:
    """Return how many exports `filters` needs."""
    id_limit = MAX_IDS_PER_EXPORT if id_limit is None else id_limit
    _, ids = _id_filter(filters)
    return 1 if ids is None else max(1, math.ceil(len(dict.fromkeys(ids)) / id_limit))


# Labelbox ids are cuids (projects, data rows) or UUIDs (model runs): letters, digits and
# dashes. Allowing a little more (`_`) costs nothing; anything else (`/`, `..`, spaces,
# control characters) is a typo or a probe, and reaches Prefect and the store otherwise.
_SOURCE_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def check_source_id(value: object, *, option: str = "--project-id") -> str:
    """Return a project or model-run id unchanged, or fail naming the option to fix.

    Raises:
        ConfigError: the id is empty, too long, or has characters no Labelbox id has.
    """
    what = "model run" if "model-run" in option else "project"
    if not isinstance(value, str) or not _SOURCE_ID_RE.fullmatch(value):
        shown = repr(value)[:80] if isinstance(value, str) else type(value).__name__
        raise ConfigError(
            f"{shown} is not a Labelbox {what} id (1-64 letters, digits, '-' or '_', as in "
            f"the {what}'s URL): fix {option}."
        )
    return value


def resolve_filter_dates(
    filters: ExportFilters, *, naive_dates_as_utc: bool = False
) -> ExportFilters:
    """Return `filters` with every date as an aware datetime, or refuse a naive one.

    Run this on what a user typed (CLI flags, the Prefect UI form, deployment defaults)
    before anything compares dates: a naive datetime next to the aware watermark would
    raise TypeError deep inside an incremental run instead of naming the fix.

    Raises:
        FilterError: a date that is not ISO 8601, or naive without `naive_dates_as_utc`.
    """
    changes: dict[str, DateRange | None] = {}
    for name in ("last_activity_at", "label_created_at"):
        rng: DateRange | None = getattr(filters, name)
        if rng is None:
            continue
        changes[name] = DateRange(
            start=parse_instant(rng.start, naive_dates_as_utc=naive_dates_as_utc)
            if rng.start is not None
            else None,
            end=parse_instant(rng.end, naive_dates_as_utc=naive_dates_as_utc)
            if rng.end is not None
            else None,
        )
    return replace(filters, **changes) if changes else filters  # type: ignore[arg-type]


# Flow parameter name -> (filter field, range end) for `filters_from_parameters`.
_DATE_PARAMETERS = {
    "last_activity_start": ("last_activity_at", "start"),
    "last_activity_end": ("last_activity_at", "end"),
    "label_created_start": ("label_created_at", "start"),
    "label_created_end": ("label_created_at", "end"),
}


def filters_from_parameters(values: Mapping[str, Any]) -> ExportFilters:
    """Return the export filters named by the project flow's parameters.

    `values` holds any of `workflow_status`, `last_activity_start`/`_end`,
    `label_created_start`/`_end`, `batch_ids`, `data_row_ids`, `global_keys`, as the flow
    receives them or as a deployment stores them (JSON: dates as strings); other keys are
    ignored. Empty values mean "no filter".
    """
    ranges: dict[str, dict[str, Any]] = {}
    for parameter, (field_name, end) in _DATE_PARAMETERS.items():
        value = values.get(parameter)
        if value is not None and value != "":
            ranges.setdefault(field_name, {})[end] = value
    status = values.get("workflow_status")
    if isinstance(status, enum.Enum):
        status = status.value
    return ExportFilters(
        last_activity_at=DateRange(**ranges["last_activity_at"])
        if "last_activity_at" in ranges
        else None,
        label_created_at=DateRange(**ranges["label_created_at"])
        if "label_created_at" in ranges
        else None,
        workflow_status=status or None,
        batch_ids=list(values["batch_ids"]) if values.get("batch_ids") else None,
        data_row_ids=list(values["data_row_ids"]) if values.get("data_row_ids") else None,
        global_keys=list(values["global_keys"]) if values.get("global_keys") else None,
    )


def filters_key(filters: ExportFilters | None) -> dict[str, Any]:
    """Return the canonical JSON form of what `filters` selects, to compare two filter sets.

    Dates must be resolved (`resolve_filter_dates`); they become UTC `...Z` strings, ids
    are de-duplicated and sorted, the workflow status is its export value, and unset
    filters are left out, so `{}` means "the whole project".
    """
    if filters is None:
        return {}
    key: dict[str, Any] = {}
    for name in ("last_activity_at", "label_created_at"):
        rng: DateRange | None = getattr(filters, name)
        if rng is None or (rng.start is None and rng.end is None):
            continue
        ends = {}
        for end in ("start", "end"):
            value = getattr(rng, end)
            if value is not None:
                when = parse_instant(value)
                ends[end] = when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        key[name] = ends
    if filters.workflow_status is not None:
        key["workflow_status"] = parse_workflow_status(filters.workflow_status).value
    for name in ("batch_ids", "data_row_ids", "global_keys"):
        ids = getattr(filters, name)
        if ids:
            key[name] = sorted(set(ids))
    if filters.extra:
        key["extra"] = dict(filters.extra)
    return key
