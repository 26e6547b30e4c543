"""Export tasks: filter rows as Labelbox does, shape them by params, cut them into chunks.

An export is planned once, in a background thread: every row of the source is built,
filtered and serialized, and only each chunk's byte/line/row ranges are kept. A chunk is
rebuilt from its row range when someone downloads it, so the bytes never all sit in memory.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import threading
import time
import uuid
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from labelhaul.emulator.media.video import drop_interpolated
from labelhaul.emulator.sources import MODEL_RUN, RowSource, iter_label_lists, iter_mask_objects
from labelhaul.emulator.synthetic import MEDIA_PATH
from labelhaul.timestamps import parse_timestamp
from labelhaul.urls import LABELBOX_HOSTED, hosting_of, strip_signing

# Labelbox's limits: ids in one export's filter, and exports running at once per project
# (20 per organisation; the emulator has one user and checks the project's).
MAX_IDS = 2_000
MAX_RUNNING_EXPORTS = 10
WORKFLOW_STATUSES = {
    "InReview": "IN_REVIEW",
    "InRework": "IN_REWORK",
    "Done": "DONE",
}
RESULT = "RESULT"
ERRORS = "ERRORS"


class ExportInputError(ValueError):
    """The export request is one Labelbox would refuse; the message says why."""


# --- filters -----------------------------------------------------------------------------

_DATE_FORMATS = ("%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d")


def _parse_bound(value: Any, tz_name: str) -> datetime:
    if not isinstance(value, str):
        raise ExportInputError(f"date filter value must be a string, got {value!r}")
    for fmt in _DATE_FORMATS:
        try:
            parsed = datetime.strptime(value, fmt)
        except ValueError:
            continue
        if parsed.tzinfo is None:
            # Naive values are wall-clock time in the requesting user's timezone.
            try:
                parsed = parsed.replace(tzinfo=ZoneInfo(tz_name))
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise ExportInputError(f"unknown timezone {tz_name!r}") from exc
        return parsed
    raise ExportInputError(
        f"invalid date {value!r}: use YYYY-MM-DD, YYYY-MM-DD hh:mm:ss or YYYY-MM-DDThh:mm:ss+hhmm"
    )


@dataclass(frozen=True)
class _Range:
    low: datetime | None
    high: datetime | None

    def contains(self, t: datetime | None) -> bool:
        if t is None:
            return False
        if self.low is not None and t < self.low:
            return False
        return not (self.high is not None and t > self.high)


def _parse_range(clause: dict[str, Any], default_tz: str) -> _Range:
    spec = clause.get("value")
    if not isinstance(spec, dict):
        raise ExportInputError(f"{clause.get('type')} filter needs a value object")
    tz_name = spec.get("timezone") or default_tz
    op = spec.get("operator")
    val = spec.get("value")
    if op == "BETWEEN":
        if not isinstance(val, dict):
            raise ExportInputError("BETWEEN needs {min, max}")
        return _Range(_parse_bound(val.get("min"), tz_name), _parse_bound(val.get("max"), tz_name))
    if op == "GREATER_THAN_OR_EQUAL":
        return _Range(_parse_bound(val, tz_name), None)
    if op == "LESS_THAN_OR_EQUAL":
        return _Range(None, _parse_bound(val, tz_name))
    raise ExportInputError(f"unknown date operator {op!r}")


@dataclass
class RowFilter:
    """The parsed `searchQuery.query` of a project export (all clauses AND together)."""

    last_activity: _Range | None = None
    labeled_at: _Range | None = None
    data_row_ids: frozenset[str] | None = None
    global_keys: frozenset[str] | None = None
    batch_ids: frozenset[str] | None = None
    workflow_status: str | None = None  # export value, e.g. "IN_REVIEW" or "TO_LABEL"

    def matches(self, row: dict[str, Any], project_id: str) -> bool:
        dr = row.get("data_row") or {}
        if self.data_row_ids is not None and dr.get("id") not in self.data_row_ids:
            return False
        if self.global_keys is not None and dr.get("global_key") not in self.global_keys:
            return False
        proj = (row.get("projects") or {}).get(project_id) or {}
        details = proj.get("project_details") or {}
        if self.batch_ids is not None and details.get("batch_id") not in self.batch_ids:
            return False
        if self.workflow_status is not None and (
            details.get("workflow_status") != self.workflow_status
        ):
            return False
        if self.last_activity is not None:
            t = parse_timestamp((dr.get("details") or {}).get("last_activity_at"))
            if not self.last_activity.contains(t):
                return False
        if self.labeled_at is not None:
            times = [
                parse_timestamp((lb.get("label_details") or {}).get("created_at"))
                for lb in proj.get("labels") or []
            ]
            if not any(self.labeled_at.contains(t) for t in times):
                return False
        return True


def parse_search_query(clauses: Any, default_tz: str, max_ids: int = MAX_IDS) -> RowFilter:
    """Validate and parse a project export's search query, as Labelbox's server does.

    Raises:
        ExportInputError: on an unknown clause, workflow status or operator, more than
            `max_ids` (Labelbox: 2,000) ids in one clause, or data row ids together with
            global keys.
    """
    if clauses is None:
        clauses = []
    if not isinstance(clauses, list):
        raise ExportInputError("searchQuery.query must be a list")
    flt = RowFilter()
    for clause in clauses:
        if not isinstance(clause, dict):
            raise ExportInputError(f"invalid search clause {clause!r}")
        kind = clause.get("type")
        if kind == "data_row_last_activity_at":
            flt.last_activity = _parse_range(clause, default_tz)
        elif kind == "labeled_at":
            flt.labeled_at = _parse_range(clause, default_tz)
        elif kind in ("data_row_id", "global_key", "batch"):
            ids = clause.get("ids")
            if not isinstance(ids, list) or not ids:
                raise ExportInputError(f"{kind} filter expects a non-empty list of ids")
            if len(ids) > max_ids:
                raise ExportInputError(
                    f"{kind} filter only supports a max of {max_ids} items, got {len(ids)}"
                )
            if clause.get("operator", "is") != "is":
                raise ExportInputError(f"unsupported operator {clause.get('operator')!r}")
            ids_set = frozenset(str(i) for i in ids)
            if kind == "data_row_id":
                flt.data_row_ids = ids_set
            elif kind == "global_key":
                flt.global_keys = ids_set
            else:
                flt.batch_ids = ids_set
        elif kind == "task_queue_status":
            status = clause.get("status")
            if status not in WORKFLOW_STATUSES:
                raise ExportInputError(
                    f"unknown workflow status {status!r}: expected one of "
                    "ToLabel, InReview, InRework, Done"
                )
            flt.workflow_status = WORKFLOW_STATUSES[status]
        elif kind == "task_queue_not_exist":
            flt.workflow_status = "TO_LABEL"
        else:
            raise ExportInputError(f"unknown search filter type {kind!r}")
    if flt.data_row_ids is not None and flt.global_keys is not None:
        raise ExportInputError("data_row_ids and global_keys cannot both be present in filters")
    return flt


# --- params ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportParams:
    """Which optional fields an export includes (Labelbox's `include*` flags)."""

    attachments: bool = False
    embeddings: bool = False
    metadata_fields: bool = False
    data_row_details: bool = False
    project_details: bool = False
    performance_details: bool = False
    label_details: bool = False
    interpolated_frames: bool = False
    predictions: bool = False
    model_run_details: bool = False

    @classmethod
    def from_graphql(cls, params: Any) -> ExportParams:
        """Read the `params` input object of an export mutation."""
        p = params if isinstance(params, dict) else {}

        def flag(name: str) -> bool:
            return bool(p.get(name) or False)

        return cls(
            attachments=flag("includeAttachments"),
            embeddings=flag("includeEmbeddings"),
            metadata_fields=flag("includeMetadata"),
            data_row_details=flag("includeDataRowDetails"),
            project_details=flag("includeProjectDetails"),
            performance_details=flag("includePerformanceDetails"),
            label_details=flag("includeLabelDetails"),
            interpolated_frames=flag("includeInterpolatedFrames"),
            predictions=flag("includePredictions"),
            model_run_details=flag("includeModelRunDetails"),
        )


# Model-run fields that `model_run_details` governs (everything but labels/predictions/name).
_RUN_DETAIL_KEYS = ("run_data_row_id", "data_split")


def shape_row(
    row: dict[str, Any],
    params: ExportParams,
    kind: str,
    base_url: str,
    *,
    task_id: str | None = None,
    expires: int | None = None,
    project_id: str | None = None,
) -> dict[str, Any]:
    """Shape one stored row as an export serves it (in place).

    Drops the fields `params` leaves out and points mask URLs at `base_url`. As Labelbox does:
    with `project_id`, keeps only that project's entry under `projects` (a data row can be in
    several projects); with `task_id`, composite mask URLs carry that export task's id and
    Labelbox-hosted `row_data` gets a signature of this export, valid until `expires` (epoch
    seconds, default a day from now).
    """
    if not params.attachments:
        row.pop("attachments", None)
    if not params.metadata_fields:
        row.pop("metadata_fields", None)
    if not params.embeddings:
        row.pop("embeddings", None)
    if not params.data_row_details:
        (row.get("data_row") or {}).pop("details", None)
    if project_id is not None and isinstance(row.get("projects"), dict):
        row["projects"] = {k: v for k, v in row["projects"].items() if k == project_id}
    for proj in (row.get("projects") or {}).values():
        if not params.project_details:
            proj.pop("project_details", None)
    for labels in iter_label_lists(row):
        for label in labels:
            if not params.label_details:
                label.pop("label_details", None)
            if not params.performance_details:
                label.pop("performance_details", None)
    if kind == MODEL_RUN:
        for exp in (row.get("experiments") or {}).values():
            for run in (exp.get("runs") or {}).values():
                if not params.predictions:
                    run.pop("predictions", None)
                if not params.model_run_details:
                    for key in _RUN_DETAIL_KEYS:
                        run.pop(key, None)
    # interpolated_frames only changes video and DICOM rows: without it, Labelbox exports
    # key frames only (the frames between keyframes are interpolated).
    if not params.interpolated_frames:
        for labels in iter_label_lists(row):
            for label in labels:
                drop_interpolated(label.get("annotations") or {})
    for obj in iter_mask_objects(row):
        for key in ("mask", "composite_mask"):
            part = obj.get(key)
            if isinstance(part, dict) and isinstance(part.get("url"), str):
                url = rebase_url(part["url"], base_url)
                if key == "composite_mask" and task_id is not None:
                    url = _TASK_IN_URL.sub(rf"\1/api/v1/tasks/{task_id}/masks/", url, count=1)
                part["url"] = url
    data_row = row.get("data_row")
    if task_id is not None and isinstance(data_row, dict):
        row_data = data_row.get("row_data")
        if isinstance(row_data, str) and hosting_of(row_data) == LABELBOX_HOSTED:
            until = expires if expires is not None else int(time.time()) + SIGNED_URL_SECONDS
            if urlsplit(row_data).path.startswith(MEDIA_PATH):
                # Media the emulator serves: on its host, signed with a key it can check.
                url = rebase_url(row_data, base_url)
                data_row["row_data"] = sign_url(url, MEDIA_SIGNING_KEY, until)
            else:
                data_row["row_data"] = sign_url(row_data, task_id, until)
    return row


# Labelbox-hosted media URLs are signed per export and work for about a day.
SIGNED_URL_SECONDS = 24 * 3600
# The key of the media URLs the emulator serves itself (`check_media_signature`).
MEDIA_SIGNING_KEY = "emulator-media-signing-key"
_KEY_NAME = "labelbox-assets-key-3"
# Only Labelbox's own composite URLs (path /api/v1/tasks/<id>/masks/...) name the task.
_TASK_IN_URL = re.compile(r"^(https?://[^/]+)?/api/v1/tasks/[^/]+/masks/")


def sign_url(url: str, task_id: str, expires: int) -> str:
    """Sign a Labelbox-hosted URL the way Labelbox's CDN does, for one export task.

    Any earlier signature is replaced. The signature is an HMAC of the URL keyed by the task
    id, so every export gets a different one and a chunk rebuilt later gets the same bytes.
    """
    bare = strip_signing(url)
    query = f"Expires={int(expires)}&KeyName={_KEY_NAME}"
    signed = f"{bare}{'&' if '?' in bare else '?'}{query}"
    mac = hmac.new(task_id.encode(), signed.encode(), hashlib.sha1).digest()
    return f"{signed}&Signature={base64.urlsafe_b64encode(mac).decode()}"


def check_media_signature(url: str) -> str | None:
    """Return why a signed media URL is refused (`expired`, `invalid`), None when it is valid."""
    query = urlsplit(url).query
    params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
    try:
        expires = int(params["Expires"])
        given = params["Signature"]
    except (KeyError, ValueError):
        return "invalid"
    expected = sign_url(url, MEDIA_SIGNING_KEY, expires).rsplit("&Signature=", 1)[1]
    if not hmac.compare_digest(expected, given):
        return "invalid"
    return "expired" if expires <= time.time() else None


def rebase_url(url: str, base_url: str) -> str:
    """Keep the path and query of `url` but put it on `base_url`'s scheme and host."""
    scheme_end = url.find("://")
    if scheme_end < 0:
        parts = urlsplit(url)
        tail = parts.path + (f"?{parts.query}" if parts.query else "")
    else:
        # Plain slicing: this runs for every mask of every exported row.
        slash = url.find("/", scheme_end + 3)
        tail = url[slash:] if slash >= 0 else ""
    return base_url.rstrip("/") + tail


def serialize_row(row: dict[str, Any]) -> bytes:
    """Serialize a row as one NDJSON line (compact, UTF-8, trailing newline)."""
    return orjson.dumps(row) + b"\n"


# --- tasks -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chunk:
    """One chunk file: byte range [start, end] and line range [line_start, line_end].

    Its bytes are `join(lines[row_lo:row_hi])[start - row_offset : end - row_offset + 1]`,
    where `row_offset` is where line `row_lo` starts in the stream.
    """

    start: int
    end: int
    line_start: int
    line_end: int
    row_lo: int  # index into the stream's selection
    row_hi: int  # exclusive
    row_offset: int


@dataclass
class StreamPlan:
    """How one stream (RESULT or ERRORS) is laid out in chunks."""

    total_size: int = 0
    total_lines: int = 0
    chunks: list[Chunk] = field(default_factory=list)


def plan_chunks(
    lines: Callable[[], Any], chunk_bytes: int, split_lines: bool = False
) -> StreamPlan:
    """Cut a stream of serialized lines into chunks of about `chunk_bytes`.

    By default chunks end at line ends (a line longer than `chunk_bytes` gets a chunk of
    its own). With `split_lines`, every chunk but the last is exactly `chunk_bytes` long and
    may start or end inside a line; the SDK concatenates chunks, so both work with it.
    """
    if split_lines:
        return _plan_split(lines, chunk_bytes)
    plan = StreamPlan()
    start = 0
    size = 0
    lo = 0
    n = 0
    for line in lines():
        if size and size + len(line) > chunk_bytes:
            plan.chunks.append(Chunk(start, start + size - 1, lo, n - 1, lo, n, start))
            start, size, lo = start + size, 0, n
        size += len(line)
        n += 1
    if size:
        plan.chunks.append(Chunk(start, start + size - 1, lo, n - 1, lo, n, start))
    plan.total_size = start + size
    plan.total_lines = n
    return plan


def _plan_split(lines: Callable[[], Any], chunk_bytes: int) -> StreamPlan:
    plan = StreamPlan()
    cs = 0  # start of the open chunk
    first, first_off = 0, 0  # the line the open chunk starts in, and where it starts
    pos = 0
    n = 0
    for line in lines():
        end = pos + len(line) - 1
        while end >= cs + chunk_bytes - 1:
            ce = cs + chunk_bytes - 1
            plan.chunks.append(Chunk(cs, ce, first, n, first, n + 1, first_off))
            cs = ce + 1
            if cs > end:
                first, first_off = n + 1, end + 1
            else:
                first, first_off = n, pos
        pos = end + 1
        n += 1
    if pos > cs:
        plan.chunks.append(Chunk(cs, pos - 1, first, n - 1, first, n, first_off))
    plan.total_size = pos
    plan.total_lines = n
    return plan


def new_task_id() -> str:
    """Return a fresh task id shaped like Labelbox's (25 lowercase characters)."""
    return "c" + uuid.uuid4().hex[:24]


def now_iso() -> str:
    """Return the current UTC time the way the SDK's ORM parses it."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class ExportTask:
    """One export: planned in a background thread, IN_PROGRESS for a while, then done."""

    def __init__(
        self,
        source: RowSource,
        flt: RowFilter | None,
        params: ExportParams,
        base_url: str,
        chunk_bytes: int,
        split_lines: bool,
        in_progress_seconds: float,
        fail_message: str | None,
        name: str | None,
        *,
        other_projects: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        only_this_project: bool = True,
    ) -> None:
        self.task_id = new_task_id()
        # `other_projects(row)`: the entries of the other projects the row's data row is in.
        self.other_projects = other_projects
        self.only_this_project = only_this_project
        self.expires = int(time.time()) + SIGNED_URL_SECONDS
        self.name = name or f"Export v2: {source.kind} {source.source_id}"
        self.source = source
        self.flt = flt
        self.params = params
        self.base_url = base_url
        self.chunk_bytes = max(1, int(chunk_bytes))
        self.split_lines = split_lines
        self.created = time.monotonic()
        self.created_at = now_iso()
        self.in_progress_seconds = in_progress_seconds
        self.fail_message = fail_message
        self.selection = array("q")
        self.error_lines: list[bytes] = []
        self.plans: dict[str, StreamPlan] = {}
        self.plan_error: str | None = None
        # Bytes the first RESULT header reports (EmulatorServer.cut_stream_once), then None.
        self.cut_once: int | None = None
        self._planned = threading.Event()
        threading.Thread(target=self._plan, name=f"plan-{self.task_id}", daemon=True).start()

    def _plan(self) -> None:
        try:
            src = self.source
            for i in src.indices():
                if self.flt is None or self.flt.matches(src.row(i), src.source_id):
                    self.selection.append(i)
            self.plans[RESULT] = plan_chunks(self._result_lines, self.chunk_bytes, self.split_lines)
            self.error_lines = [serialize_row(e) for e in src.error_lines()]
            self.plans[ERRORS] = plan_chunks(
                lambda: iter(self.error_lines), self.chunk_bytes, self.split_lines
            )
        except Exception as exc:  # a broken source fails the task, as Labelbox's would
            self.plan_error = f"export failed while preparing rows: {exc}"
        finally:
            self._planned.set()

    def _result_lines(self, lo: int = 0, hi: int | None = None) -> Iterator[bytes]:
        src = self.source
        only = src.source_id if src.kind != MODEL_RUN and self.only_this_project else None
        stop = len(self.selection) if hi is None else hi
        indices = (self.selection[k] for k in range(lo, stop))
        for row in src.iter_rows(indices):
            if self.other_projects is not None and isinstance(row.get("projects"), dict):
                for pid, entry in self.other_projects(row).items():
                    row["projects"].setdefault(pid, entry)
            shaped = shape_row(
                row,
                self.params,
                src.kind,
                self.base_url,
                task_id=self.task_id,
                expires=self.expires,
                project_id=only,
            )
            yield serialize_row(shaped)

    def wait_planned(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for planning; return whether it finished."""
        return self._planned.wait(timeout)

    def status(self) -> tuple[str, float]:
        """Return (status, completion percentage) right now."""
        elapsed = time.monotonic() - self.created
        if not self._planned.is_set() or elapsed < self.in_progress_seconds:
            pct = 0.0 if self.in_progress_seconds <= 0 else elapsed / self.in_progress_seconds
            return "IN_PROGRESS", round(min(99.0, 100.0 * pct), 1)
        if self.fail_message is not None or self.plan_error is not None:
            return "FAILED", 100.0
        return "COMPLETE", 100.0

    def failure(self) -> str | None:
        """Return the failure message of a FAILED task."""
        return self.fail_message if self.fail_message is not None else self.plan_error

    def chunk_at(self, stream: str, offset: int) -> tuple[int, Chunk] | None:
        """Return (index, chunk) holding byte `offset` of `stream`, or None past the end."""
        plan = self.plans.get(stream)
        if plan is None or offset < 0:
            return None
        lo, hi = 0, len(plan.chunks)
        while lo < hi:
            mid = (lo + hi) // 2
            c = plan.chunks[mid]
            if offset < c.start:
                hi = mid
            elif offset > c.end:
                lo = mid + 1
            else:
                return mid, c
        return None

    def chunk_bytes_of(self, stream: str, index: int) -> bytes:
        """Rebuild the bytes of chunk `index` of `stream`."""
        chunk = self.plans[stream].chunks[index]
        if stream == ERRORS:
            data = b"".join(self.error_lines[chunk.row_lo : chunk.row_hi])
        else:
            data = b"".join(self._result_lines(chunk.row_lo, chunk.row_hi))
        data = data[chunk.start - chunk.row_offset : chunk.end - chunk.row_offset + 1]
        if len(data) != chunk.end - chunk.start + 1:
            raise RuntimeError("a source returned different bytes for the same rows")
        return data


def default_timezone_check(name: str) -> str:
    """Return `name` if it is a valid IANA timezone, else raise ValueError."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown timezone {name!r}: use an IANA name such as 'UTC'") from exc
    return name
