"""The sync pipeline as plain functions: stage the export, split masks by part, assemble, land.

Flows call these through thin tasks; nothing here imports Prefect. Every stage reads and
writes a local staging directory, so memory stays bounded by one part whatever the export's
size, and a stage can run on another worker that sees the same directory.

Staging layout (one directory per run)::

    raw-export.ndjson.gz      the RESULT stream as received (provenance)
    raw-errors.ndjson.gz      the ERRORS stream as received
    errors.ndjson             our own error records (bad lines, bad masks, ...)
    parts/part-000001.records.ndjson   [table, record] per line, for the data rows of the part
    parts/part-000001.jobs.ndjson      the part's mask jobs (one composite each)
    parts/part-000001.masks.ndjson     the part's mask results (written by the mask stage)
    parts/part-000001.media-jobs.ndjson  the part's media to fetch (with include_media)
    parts/part-000001.media.ndjson     the part's media results (written by the media stage)
    parts/part-000001.content.ndjson   text-like rows' fetched content (labelhaul.row_content)
    data_row_ids.txt          every data row id the export returned (incremental merges)

A part is a run of consecutive data rows holding at most `part_composites` composites (one
Prefect task run each in the mask stage) or `part_rows` rows.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import io
import itertools
import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import BrokenExecutor, Future
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import orjson

from labelhaul.manifest import FileEntry, Manifest
from labelhaul.masktypes import MaskInstance, MaskJob, MaskResult, mask_key
from labelhaul.media import MediaJob, MediaResult, is_fetchable
from labelhaul.records import ErrorRecord
from labelhaul.store import CommitResult, FileMissingError, VersionWriter, file_sha256

if TYPE_CHECKING:
    import pyarrow as pa

    from labelhaul.blobindex import KnownBlobs

log = logging.getLogger("labelhaul.pipeline")


# --------------------------------------------------------------------------- staging


@dataclass
class StageSummary:
    """What staging the export produced."""

    rows: int = 0
    bad_lines: int = 0
    export_errors: int = 0
    parts: list[str] = field(default_factory=list)
    composites: int = 0  # composite PNGs to download (one per label that has masks)
    mask_instances: int = 0  # every mask instance, in a composite or not
    instance_only_masks: int = 0  # instances with only their own mask.url (pre-2024 exports)
    records_by_table: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    max_last_activity_at: str | None = None
    duplicates: int = 0  # data rows exported more than once (the later copy kept)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)


_BINARY_COLUMNS: dict[str, tuple[str, ...]] | None = None


def _binary_columns(table: str) -> tuple[str, ...]:
    """Return a table's binary columns (geometry_wkb): staged parts carry them as hex text."""
    global _BINARY_COLUMNS
    if _BINARY_COLUMNS is None:
        import pyarrow as pa

        from labelhaul.tables import SCHEMAS

        _BINARY_COLUMNS = {
            name: tuple(f.name for f in schema if pa.types.is_binary(f.type))
            for name, schema in SCHEMAS.items()
        }
    return _BINARY_COLUMNS.get(table, ())


def _stage_record(table: str, record: dict[str, Any], *, decode: bool) -> dict[str, Any]:
    """Turn a record's bytes into hex for the NDJSON part (or back, with `decode`)."""
    columns = [c for c in _binary_columns(table) if record.get(c) is not None]
    if not columns:
        return record
    out = dict(record)
    for c in columns:
        out[c] = bytes.fromhex(out[c]) if decode else bytes(out[c]).hex()
    return out


def job_to_dict(job: MaskJob) -> dict[str, Any]:
    """Return the job's fields, its instances left as dataclasses (orjson writes them as
    objects, the same bytes as `dataclasses.asdict` gives, without its deep copy)."""
    return {f: getattr(job, f) for f in _JOB_FIELDS}


_JOB_FIELDS = tuple(f.name for f in dataclasses.fields(MaskJob))


def job_from_dict(d: dict[str, Any]) -> MaskJob:
    instances = tuple(
        MaskInstance(
            feature_id=i["feature_id"],
            color=(int(i["color"][0]), int(i["color"][1]), int(i["color"][2])),
            instance_url=i.get("instance_url"),
            name=i.get("name"),
        )
        for i in d["instances"]
    )
    return MaskJob(
        data_row_id=d["data_row_id"],
        global_key=d.get("global_key"),
        label_id=d["label_id"],
        composite_url=d.get("composite_url"),
        width=d.get("width"),
        height=d.get("height"),
        instances=instances,
        frame=d.get("frame"),
        plane=d.get("plane"),
    )


def result_from_dict(d: dict[str, Any]) -> MaskResult:
    return MaskResult(**d)


def read_ndjson(path: Path) -> Iterator[Any]:
    """Yield each JSON value of an NDJSON file (gzip when the name ends in .gz)."""
    if not path.exists():
        return
    opener: Callable[..., IO[bytes]] = gzip.open if path.suffix == ".gz" else open  # type: ignore[assignment]
    with opener(path, "rb") as fh:
        for line in fh:
            if line.strip():
                yield orjson.loads(line)


class _PartWriter:
    """Writes one part's records and mask jobs, each tagged with its line's offset."""

    def __init__(self, parts_dir: Path, index: int) -> None:
        self.name = f"part-{index:06d}"
        self.records_path = parts_dir / f"{self.name}.records.ndjson"
        self.jobs_path = parts_dir / f"{self.name}.jobs.ndjson"
        self._records = open(self.records_path, "wb")  # noqa: SIM115 - closed in close()
        self._jobs = open(self.jobs_path, "wb")  # noqa: SIM115
        self._media: IO[bytes] | None = None
        self.rows = 0
        self.composites = 0

    def add_media(self, job: MediaJob) -> None:
        if self._media is None:
            path = self.records_path.parent / f"{self.name}.{MEDIA_JOBS}"
            self._media = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._media.write(_dumps(job) + b"\n")  # orjson writes a dataclass's fields

    def add(
        self, tables: dict[str, list[dict[str, Any]]], jobs: list[MaskJob], offset: int
    ) -> None:
        for table, records in tables.items():
            for record in records:
                staged = _stage_record(table, record, decode=False)
                self._records.write(_dumps([table, staged, offset]))
                self._records.write(b"\n")
        for job in jobs:
            self._jobs.write(_dumps({**job_to_dict(job), "row_offset": offset}))
            self._jobs.write(b"\n")
        self.rows += 1
        self.composites += len(jobs)

    def close(self) -> None:
        self._records.close()
        self._jobs.close()
        if self._media is not None:
            self._media.close()


SUPERSEDED = "superseded.ndjson"
# Clocks differ a little between Labelbox and here; beyond this a timestamp is out of range.
CLOCK_SKEW = timedelta(hours=1)


def stage_export(
    lines: Iterable[tuple[int, bytes]],
    staging: Path,
    *,
    part_composites: int = 100,
    part_rows: int = 2000,
    on_row: Callable[[int], None] | None = None,
    source_id: str | None = None,
    not_after: datetime | None = None,
    media: bool = False,
    row_content: bool = False,
    on_mask_parts: Callable[[int], None] | None = None,
    on_part_closed: Callable[[str], None] | None = None,
) -> StageSummary:
    """Stream the RESULT lines into the staging directory, part by part.

    A data row exported twice (a retried or split export) lands once: the later copy wins,
    the earlier one is listed in `superseded.ndjson` (left out of tables and the mask stage),
    and a `duplicate_data_row` warning names both offsets.

    Args:
        lines: (byte offset, raw line) pairs as the export reader yields them.
        staging: the run's staging directory (created).
        part_composites: cut a part once it holds this many composite masks.
        part_rows: cut a part once it holds this many data rows.
        on_row: called with the running row count (progress reporting).
        on_mask_parts: called with the number of parts holding mask jobs so far, each time
            it grows (the flow starts its mask pool early: `maskpool.EarlyPool`).
        on_part_closed: called with the name of each part holding mask jobs once its
            files are complete (the pool splits it while the rest streams).
        source_id: the exported project or model run; other projects' entries in a row
            become error records (`rows.parse_export_line`).
        not_after: when the export was started. The watermark never passes it (a row
            stamped later would make every later incremental run skip what changed
            meanwhile); a row stamped more than `CLOCK_SKEW` after it, or with a timestamp
            that does not parse, gets a `timestamp_out_of_range` warning and no say in it.
        media: also list each data row's media (its `row_data` URL as exported, still
            signed) for the media stage (`include_media`).
        row_content: list the media of text-like rows whose `row_data` is a URL (a .txt,
            a conversation JSON) for the media stage, which fetches it for the tables
            (labelhaul.row_content).
    """
    from labelhaul.rows import parse_export_line
    from labelhaul.tables import compute_watermark
    from labelhaul.timestamps import format_timestamp, parse_timestamp

    staging.mkdir(parents=True, exist_ok=True)
    parts_dir = staging / "parts"
    parts_dir.mkdir(exist_ok=True)
    summary = StageSummary()
    ids_file = open(staging / "data_row_ids.txt", "w", encoding="utf-8")  # noqa: SIM115
    errors_file = open(staging / "errors.ndjson", "ab")  # noqa: SIM115
    superseded_file = open(staging / SUPERSEDED, "wb")  # noqa: SIM115
    raw = gzip.GzipFile(staging / "raw-export.ndjson.gz", "wb", compresslevel=6, mtime=0)
    part: _PartWriter | None = None
    # data row id -> (offset, composites, instances) of the copy staged (one entry per row,
    # as the incremental merge's id set holds anyway).
    seen: dict[str, tuple[int, int, int, int]] = {}
    limit = not_after.astimezone(UTC) if not_after is not None else None
    mask_parts = 0  # parts holding a mask job so far (on_mask_parts)

    def warn(err: ErrorRecord) -> None:
        summary.errors += 1
        errors_file.write(_dumps(err.to_dict()) + b"\n")

    def close_part() -> None:
        nonlocal part
        assert part is not None
        part.close()
        if on_part_closed is not None and part.composites:
            on_part_closed(part.name)
        part = None

    try:
        for offset, line in lines:
            raw.write(line if line.endswith(b"\n") else line + b"\n")
            parsed = parse_export_line(line, offset, source_id=source_id)
            if isinstance(parsed, ErrorRecord):
                summary.bad_lines += 1
                warn(parsed)
                continue
            n_instances = sum(len(j.instances) for j in parsed.mask_jobs)
            n_composites = sum(1 for j in parsed.mask_jobs if j.composite_url is not None)
            n_instance_only = sum(
                len(j.instances) for j in parsed.mask_jobs if j.composite_url is None
            )
            earlier = seen.get(parsed.data_row_id)
            if earlier is not None:
                superseded_file.write(
                    _dumps({"data_row_id": parsed.data_row_id, "offset": earlier[0]}) + b"\n"
                )
                summary.duplicates += 1
                summary.composites -= earlier[1]
                summary.mask_instances -= earlier[2]
                summary.instance_only_masks -= earlier[3]
                warn(
                    ErrorRecord(
                        "export",
                        "duplicate_data_row",
                        f"data row {parsed.data_row_id} is in the export twice (bytes "
                        f"{earlier[0]} and {offset}): the later copy is kept",
                        data_row_id=parsed.data_row_id,
                        global_key=parsed.global_key,
                        offset=offset,
                        extra={"earlier_offset": earlier[0]},
                        severity="warning",
                    )
                )
            seen[parsed.data_row_id] = (offset, n_composites, n_instances, n_instance_only)
            if part is None:
                part = _PartWriter(parts_dir, len(summary.parts) + 1)
                summary.parts.append(part.name)
            if parsed.mask_jobs and part.composites == 0:  # counts the part's mask jobs
                mask_parts += 1
                if on_mask_parts is not None:
                    on_mask_parts(mask_parts)
            part.add(parsed.tables, parsed.mask_jobs, offset)
            if media or (row_content and _text_like(parsed.tables)):
                job = media_job_of(
                    line,
                    parsed.data_row_id,
                    parsed.global_key,
                    offset,
                    media=media,
                    row_content=row_content,
                )
                if job is not None:
                    part.add_media(job)
            if earlier is None:
                ids_file.write(parsed.data_row_id + "\n")
            summary.rows += 1
            summary.composites += n_composites
            summary.mask_instances += n_instances
            summary.instance_only_masks += n_instance_only
            for table, records in parsed.tables.items():
                summary.records_by_table[table] = summary.records_by_table.get(table, 0) + len(
                    records
                )
            for err in parsed.errors:
                warn(err)
            stamp = parsed.last_activity_at
            if stamp:
                when = parse_timestamp(stamp)
                if when is None or (limit is not None and when > limit + CLOCK_SKEW):
                    why = "does not parse" if when is None else "is after the export started"
                    warn(
                        ErrorRecord(
                            "export",
                            "timestamp_out_of_range",
                            f"last_activity_at {stamp!r} of data row {parsed.data_row_id} {why}"
                            + (f" ({format_timestamp(limit)})" if limit and when else "")
                            + ": it does not move the incremental watermark",
                            data_row_id=parsed.data_row_id,
                            global_key=parsed.global_key,
                            offset=offset,
                            extra={"last_activity_at": stamp},
                            severity="warning",
                        )
                    )
                else:
                    if limit is not None and when > limit:
                        stamp = format_timestamp(limit)  # within the skew: clamp
                    # Instants, not strings: offsets and precision vary between rows.
                    summary.max_last_activity_at = compute_watermark(
                        [stamp], summary.max_last_activity_at
                    ).value
            if on_row is not None:
                on_row(summary.rows)
            if part.composites >= part_composites or part.rows >= part_rows:
                close_part()
        if part is not None:
            close_part()
    finally:
        if part is not None:  # the stream failed: close what was written, tell nobody
            part.close()
        raw.close()
        ids_file.close()
        errors_file.close()
        superseded_file.close()
    return summary


def why_not_incremental(parent_manifest: Manifest | None) -> str | None:
    """Return why an incremental sync onto `parent_manifest` cannot be one, or None if it can.

    An incremental export asks for rows active since the parent's watermark; a parent whose
    rows carried no `last_activity_at` (no data row details in its export, as in many older
    exports) has none, and exporting "since nothing" would only pretend to be incremental.
    """
    if parent_manifest is None:
        return None
    parent = parent_manifest
    if parent.watermark is not None and parent.watermark.value:
        return None
    return (
        f"cannot sync incrementally: {parent.version_id} has no watermark "
        "(its rows carry no data_row.details.last_activity_at); running a full sync. Keep "
        "data_row_details on in the export params so the next run can be incremental."
    )


def read_superseded(staging: Path) -> set[tuple[str, int]]:
    """Return the (data row id, offset) of the copies a later copy of the row replaces."""
    return {(str(d["data_row_id"]), int(d["offset"])) for d in read_ndjson(staging / SUPERSEDED)}


def export_error_record(line: bytes, offset: int) -> ErrorRecord:
    """Turn one line of the export's ERRORS stream into an error record with its ids."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        obj = None
    if not isinstance(obj, dict):
        text = line[:500].decode("utf-8", "replace")
        return ErrorRecord("export", "export_error", text, offset=offset)
    found = obj.get("data_row")
    data_row: dict[str, Any] = found if isinstance(found, dict) else {}
    data_row_id = obj.get("data_row_id") or obj.get("dataRowId") or data_row.get("id")
    message = obj.get("message") or obj.get("error") or obj.get("errors")
    return ErrorRecord(
        "export",
        "export_error",
        str(message if message is not None else line[:500].decode("utf-8", "replace")),
        data_row_id=str(data_row_id) if data_row_id else None,
        global_key=obj.get("global_key") or data_row.get("global_key"),
        offset=offset,
    )


def stage_export_errors(lines: Iterable[tuple[int, bytes]], staging: Path) -> int:
    """Keep the export's ERRORS stream as received, and record each line as an error."""
    staging.mkdir(parents=True, exist_ok=True)
    count = 0
    path = staging / "raw-errors.ndjson.gz"
    with (
        gzip.GzipFile(path, "ab", compresslevel=6, mtime=0) as raw,
        open(staging / "errors.ndjson", "ab") as records,
    ):
        for offset, line in lines:
            raw.write(line if line.endswith(b"\n") else line + b"\n")
            records.write(_dumps(export_error_record(line, offset).to_dict()) + b"\n")
            count += 1
    if count == 0:
        path.unlink()  # no ERRORS stream: the version lists no errors file
    return count


def append_errors(staging: Path, errors: Iterable[ErrorRecord], *, to: Path | None = None) -> int:
    """Append error records to the run's errors file (or the file `to`); return how many."""
    n = 0
    with open(to or staging / "errors.ndjson", "ab") as fh:
        for err in errors:
            fh.write(_dumps(err.to_dict()) + b"\n")
            n += 1
    return n


def read_errors(staging: Path) -> Iterator[dict[str, Any]]:
    yield from read_ndjson(staging / "errors.ndjson")


# --------------------------------------------------------------------------- media

MEDIA_JOBS = "media-jobs.ndjson"
MEDIA_RESULTS = "media.ndjson"
CONTENT = "content.ndjson"


def _text_like(tables: dict[str, list[dict[str, Any]]]) -> bool:
    """Tell from a parsed row's `data_rows` record whether its content may need fetching.

    Decided before `media_job_of` parses the raw line again: an image row costs nothing.
    """
    from labelhaul.row_content import content_kind

    rows = tables.get("data_rows") or ()
    return any(content_kind(r.get("mime_type")) is not None for r in rows)


def media_job_of(
    line: bytes,
    data_row_id: str,
    global_key: str | None,
    offset: int,
    *,
    media: bool = True,
    row_content: bool = False,
) -> MediaJob | None:
    """Return the media job of one export line: its `row_data` URL as exported (signed).

    The tables keep the URL without its signature (`labelhaul.urls`); the media stage needs
    the signed one, which only the raw line has. None when the row data is not a URL, or
    when only `row_content` is asked and the row is not text-like (labelhaul.row_content).
    A text-like row's job asks for its body (`MediaJob.content`) either way.
    """
    from labelhaul.row_content import wants_content

    obj = orjson.loads(line)
    data_row = obj.get("data_row") if isinstance(obj, dict) else None
    row_data = data_row.get("row_data") if isinstance(data_row, dict) else None
    if not isinstance(row_data, str) or not is_fetchable(row_data):
        return None
    attrs = obj.get("media_attributes") if isinstance(obj, dict) else None
    content = wants_content(row_data, attrs)
    if not media and not (row_content and content):
        return None
    length = attrs.get("content_length") if isinstance(attrs, dict) else None
    return MediaJob(
        data_row_id=data_row_id,
        global_key=global_key,
        url=row_data,
        offset=offset,
        expected_bytes=length if isinstance(length, int) and length > 0 else None,
        content=content,
    )


def part_media_jobs(staging: Path, part: str) -> Iterator[MediaJob]:
    """Yield one part's media jobs, less those of data row copies a later copy replaces."""
    dropped = read_superseded(staging)
    for d in read_ndjson(staging / "parts" / f"{part}.{MEDIA_JOBS}"):
        if (d["data_row_id"], d.get("offset")) not in dropped:
            yield MediaJob(**d)


def has_media_jobs(staging: Path, part: str) -> bool:
    """Say whether staging listed media for `part`."""
    return (staging / "parts" / f"{part}.{MEDIA_JOBS}").exists()


def any_media_jobs(staging: Path, parts: Iterable[str]) -> bool:
    """Say whether staging listed media for any part (include_media, or text-like rows)."""
    return any(has_media_jobs(staging, part) for part in parts)


@dataclass
class MediaTotals:
    """What the media stage did: files downloaded, found in the store, failed."""

    downloaded: int = 0
    reused: int = 0
    failed: int = 0
    bytes_downloaded: int = 0

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def write_media_results(
    staging: Path, part: str, outcomes: Iterable[MediaResult | ErrorRecord]
) -> MediaTotals:
    """Write one part's media results and error records (a re-run replaces, never mixes)."""
    target = staging / "parts" / f"{part}.{MEDIA_RESULTS}"
    tmp = target.with_suffix(".tmp")
    content_target = staging / "parts" / f"{part}.{CONTENT}"
    content_tmp = content_target.with_suffix(".tmp")
    totals = MediaTotals()
    errors: list[ErrorRecord] = []
    with open(tmp, "wb") as fh, open(content_tmp, "wb") as contents:
        for outcome in outcomes:
            if isinstance(outcome, ErrorRecord):
                errors.append(outcome)  # one part's failures: bounded by the part
                totals.failed += 1
                fh.write(
                    _dumps({"data_row_id": outcome.data_row_id, "error": outcome.kind}) + b"\n"
                )
                continue
            if outcome.outcome == "downloaded":
                totals.downloaded += 1
                totals.bytes_downloaded += outcome.bytes
            else:
                totals.reused += 1
            if outcome.content is not None or outcome.content_error is not None:
                contents.write(_dumps(_content_line(outcome)) + b"\n")
            result = {
                f.name: getattr(outcome, f.name)
                for f in dataclasses.fields(outcome)
                if f.name not in ("content", "content_error")
            }
            fh.write(_dumps(result) + b"\n")
    tmp.replace(target)
    content_tmp.replace(content_target)
    append_errors(staging, errors)
    return totals


def _content_line(outcome: MediaResult) -> dict[str, Any]:
    """Return a content file line: the body as text, or why there is none."""
    from labelhaul.row_content import decode_content

    line: dict[str, Any] = {"data_row_id": outcome.data_row_id, "sha256": outcome.sha256}
    text = decode_content(outcome.content) if outcome.content is not None else None
    if text is None:
        line["error"] = outcome.content_error or "content_not_utf8"
    else:
        line["text"] = text
    return line


def read_part_contents(staging: Path, part: str) -> Iterator[dict[str, Any]]:
    """Yield one part's fetched contents, a line (one data row's) at a time."""
    path = staging / "parts" / f"{part}.{CONTENT}"
    if path.exists():
        yield from read_ndjson(path)


CONTENT_ERRORS = "content-errors.ndjson"
CONTENT_ERRORS_APPENDED = "content-errors.appended"


def apply_part_contents(
    staging: Path,
    part: str,
    by_table: dict[str, list[dict[str, Any]]],
    media: Mapping[str, Mapping[str, Any]],
    errors: IO[bytes],
) -> None:
    """Apply a part's fetched contents to its records (labelhaul.row_content), in place.

    Every text-like data row gets its `content_status`; fetched texts and conversations
    fill `content_text`, covered text and `messages`. Memory: the part's records (held
    anyway) and one content at a time; problems are written to `errors`.
    """
    from labelhaul.row_content import apply_content, cover_conversation_entities, missing_status

    rows = {str(r.get("data_row_id")): r for r in by_table.get("data_rows", [])}
    annotations: dict[str, list[dict[str, Any]]] = {}
    for rec in by_table.get("annotations", []):
        annotations.setdefault(str(rec.get("data_row_id")), []).append(rec)
    applied: set[str] = set()
    for line in read_part_contents(staging, part):
        drid = str(line["data_row_id"])
        row = rows.get(drid)
        if row is None:
            continue  # a superseded copy's content
        applied.add(drid)
        if "text" not in line:
            row["content_status"] = line.get("error")
            errors.write(_dumps(_content_error(row, line).to_dict()) + b"\n")
            continue
        messages, problems = apply_content(
            row, annotations.get(drid, []), line["text"], sha256=line.get("sha256")
        )
        if messages:
            by_table.setdefault("messages", []).extend(messages)
        for err in problems:
            errors.write(_dumps(err.to_dict()) + b"\n")
    for drid, row in rows.items():
        if drid not in applied:
            error = media.get(drid, {}).get("media_error")
            row["content_status"] = missing_status(row, error)
    cover_conversation_entities(by_table.get("annotations", []), by_table.get("messages", []))
    if applied and by_table.get("messages"):
        # Every table in data row order (preference.Conversations walks them side by side):
        # fetched conversations' messages go beside the inline ones, not after them.
        order = {drid: i for i, drid in enumerate(rows)}
        by_table["messages"].sort(key=lambda m: order.get(str(m.get("data_row_id")), -1))


def _content_error(row: Mapping[str, Any], line: Mapping[str, Any]) -> ErrorRecord:
    kind = str(line.get("error"))
    why = {
        "content_not_utf8": "is not UTF-8 text",
        "content_too_large": "is larger than Labelbox's 16 MB text limit",
    }.get(kind, "could not be read back from the store (re-run the sync)")
    return ErrorRecord(
        "media",
        kind,
        f"the content of data row {row.get('data_row_id')} (row_data {row.get('row_data')}) "
        f"{why}: its text, messages and covered text are missing (the file is kept as "
        "media, data_rows.media_sha256)",
        data_row_id=str(row.get("data_row_id")),
        global_key=row.get("global_key"),
        extra={"media_sha256": line.get("sha256"), "path": "data_row.row_data"},
    )


def read_media_results(staging: Path, part: str) -> dict[str, dict[str, Any]]:
    """Return data row id -> its media columns for one part (bounded: one part)."""
    out: dict[str, dict[str, Any]] = {}
    for d in read_ndjson(staging / "parts" / f"{part}.{MEDIA_RESULTS}"):
        if d.get("error"):
            out[d["data_row_id"]] = {"media_error": d["error"]}
        else:
            out[d["data_row_id"]] = {
                "media_sha256": d["sha256"],
                "media_bytes": d["bytes"],
                "media_content_type": d.get("content_type"),
            }
    return out


def apply_media_results(
    records: list[dict[str, Any]], media: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """Return the `data_rows` records with their media columns filled in."""
    if not media:
        return records
    return [{**r, **media.get(str(r.get("data_row_id")), {})} for r in records]


def check_media_failures(staging: Path, *, latest: str | None) -> int:
    """Refuse to land a version that lacks media a re-run could fetch; return failures.

    As with masks (`check_mask_failures`): committing without media that failed for a
    transient reason would move the watermark past those rows, and no incremental run
    would fetch them again. Permanent failures (an expired or refused URL, 404) are error
    records of the version, not a failed run.

    Raises:
        IncompleteRunError: media failed transiently (after the HTTP retries).
    """
    from labelhaul.errors import IncompleteRunError

    failures = count_failures(
        staging, lambda err: err.get("stage") == "media" and err.get("severity") == "error"
    )
    if failures.transient:
        where = f"latest stays {latest}" if latest else "no version is made"
        why = ", ".join(f"{k}: {v}" for k, v in sorted(failures.reasons.items()))
        raise IncompleteRunError(
            f"{failures.transient} media file(s) could not be downloaded for transient "
            f"reasons ({why}): "
            f"nothing committed, {where}. Re-run the sync once the media host answers; it "
            "fetches only the media the store lacks (LABELHAUL_HTTP_RETRIES sets the retries; "
            "text and conversation rows' files are fetched without include_media too, "
            "LABELHAUL_FETCH_ROW_CONTENT=false skips them)."
        )
    return failures.transient + failures.permanent


# --------------------------------------------------------------------------- masks


@dataclass
class MaskPartSummary:
    part: str
    composites: int
    instances: int
    errors: int
    early: bool = False  # split while the export was still being staged (`maskpool.EarlyPool`)


def part_jobs(staging: Path, part: str, *, drop_superseded: bool = True) -> list[MaskJob]:
    """Return one part's mask jobs, less those of data row copies a later copy replaces.

    With `drop_superseded` False, all of them: while the export is still being staged
    (`maskpool.EarlyPool`), the list of superseded copies is neither final nor closed.
    """
    dropped = read_superseded(staging) if drop_superseded else set()
    return [
        job_from_dict(d)
        for d in read_ndjson(staging / "parts" / f"{part}.jobs.ndjson")
        if (d["data_row_id"], d.get("row_offset")) not in dropped
    ]


def has_mask_jobs(staging: Path, part: str) -> bool:
    """Say whether staging wrote any mask job for `part` (a part without one needs no task)."""
    return (staging / "parts" / f"{part}.jobs.ndjson").stat().st_size > 0


def write_mask_results(
    staging: Path,
    part: str,
    results: Iterable[MaskResult],
    errors: Iterable[ErrorRecord],
    *,
    into: Path | None = None,
) -> tuple[int, int]:
    """Write one part's mask results (atomically: a re-run replaces, never mixes).

    With `into`, the results and the errors go to that folder instead, as
    `<part>.masks.ndjson` and `<part>.errors.ndjson`, for `adopt_mask_results` to take.
    """
    target = (into or staging / "parts") / f"{part}.masks.ndjson"
    tmp = target.with_suffix(".tmp")
    n = 0
    with open(tmp, "wb") as fh:
        for r in results:
            # orjson writes a dataclass's fields as asdict would, without its deep copy.
            fh.write(_dumps(r) + b"\n")
            n += 1
    tmp.replace(target)
    return n, append_errors(staging, errors, to=into and into / f"{part}.errors.ndjson")


def adopt_mask_results(staging: Path, part: str, folder: Path) -> None:
    """Make the results `write_mask_results(..., into=folder)` wrote the part's own."""
    (folder / f"{part}.masks.ndjson").replace(staging / "parts" / f"{part}.masks.ndjson")
    errors = (folder / f"{part}.errors.ndjson").read_bytes()
    if errors:
        with open(staging / "errors.ndjson", "ab") as fh:
            fh.write(errors)


# Mask records that end an instance without a mask (the others say "using the instance mask").
_FINAL_WARNINGS = frozenset({"mask_empty"})


def _is_final_mask_failure(err: dict[str, Any]) -> bool:
    return err.get("stage") == "mask" and (
        err.get("severity") == "error" or err.get("kind") in _FINAL_WARNINGS
    )


def read_mask_failures(staging: Path) -> dict[str, str]:
    """Return `mask_key(feature id, frame, plane)` -> the kind of the record that left it maskless.

    Only failed instances are held (not every mask), so memory follows the failures.
    """
    return {
        _failure_key(err): str(err["kind"])
        for err in read_errors(staging)
        if err.get("feature_id") and _is_final_mask_failure(err)
    }


def _failure_key(err: dict[str, Any]) -> str:
    extra = err.get("extra") or {}
    return mask_key(str(err["feature_id"]), extra.get("frame"), extra.get("plane"))


@dataclass(frozen=True)
class MaskFailures:
    """Instances the mask stage left without a mask, split by whether a re-run may get them."""

    transient: int
    permanent: int
    reasons: dict[str, int]  # "HTTP 503", "ConnectionError", ... -> count (transient ones)


def count_mask_failures(staging: Path) -> MaskFailures:
    """Count the run's final mask failures (see `masks._from_instance_url`)."""
    return count_failures(staging, _is_final_mask_failure)


def count_failures(staging: Path, counts: Callable[[dict[str, Any]], bool]) -> MaskFailures:
    """Count the staged error records `counts` selects, transient (by reason) or permanent."""
    transient = permanent = 0
    reasons: dict[str, int] = {}
    for err in read_errors(staging):
        if not counts(err):
            continue
        extra = err.get("extra") or {}
        if extra.get("transient"):
            transient += 1
            status = extra.get("status")
            why = f"HTTP {status}" if status else "connection reset or timeout"
            reasons[why] = reasons.get(why, 0) + 1
        else:
            permanent += 1
    return MaskFailures(transient, permanent, reasons)


def check_mask_failures(
    staging: Path, instances: int, *, max_permanent_fraction: float, latest: str | None
) -> MaskFailures:
    """Refuse to land a version that lacks masks a re-run could fetch, or too many for good.

    A transient failure (5xx, 429, reset, timeout after the HTTP retries) is not bad input:
    committing without those masks would move `latest` (and the watermark) past the rows, so
    no later incremental run would fetch them again. Failing instead leaves `latest` and its
    watermark where they are, and the next run exports those rows again.

    Raises:
        IncompleteRunError: transient failures, or permanent ones above the tolerated fraction.
    """
    from labelhaul.errors import IncompleteRunError

    found = count_mask_failures(staging)
    where = f"latest stays {latest}" if latest else "no version is made"
    if found.transient:
        why = ", ".join(f"{k}: {v}" for k, v in sorted(found.reasons.items()))
        raise IncompleteRunError(
            f"{found.transient} of {instances} masks could not be downloaded for transient "
            f"reasons ({why}): nothing committed, {where}. Re-run the sync once the mask host "
            "answers (LABELHAUL_HTTP_RETRIES sets the retries per mask)."
        )
    if instances and found.permanent > max_permanent_fraction * instances:
        raise IncompleteRunError(
            f"{found.permanent} of {instances} masks failed for good (see the run's error "
            f"records), more than LABELHAUL_MAX_MASK_ERROR_FRACTION={max_permanent_fraction}: "
            f"nothing committed, {where}. Fix the masks in Labelbox or raise the setting."
        )
    return found


def read_mask_results(staging: Path, part: str) -> list[MaskResult]:
    """Return one part's mask results (bounded: one part)."""
    return [result_from_dict(d) for d in read_ndjson(staging / "parts" / f"{part}.masks.ndjson")]


def iter_part_records(staging: Path, part: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield one part's (table, record) pairs, less those of superseded data row copies."""
    dropped = read_superseded(staging)
    for table, record, offset in read_ndjson(staging / "parts" / f"{part}.records.ndjson"):
        if not dropped or (record.get("data_row_id"), offset) not in dropped:
            yield table, _stage_record(table, record, decode=True)


def read_data_row_ids(staging: Path) -> set[str]:
    path = staging / "data_row_ids.txt"
    if not path.exists():
        return set()
    with open(path, encoding="utf-8") as fh:
        return {line.strip() for line in fh if line.strip()}


# --------------------------------------------------------------------------- assembly


@dataclass
class AssembledVersion:
    """The local files of a version, ready to land."""

    tables: dict[str, Path]
    counts: dict[str, int]
    table_digests: dict[str, str]
    content_digest: str
    coco: Path
    coco_results: dict[str, Path]  # iou type -> detection results file (model runs)
    category_map: dict[str, dict[str, Any]]  # category key -> {"id", "name"} (labelhaul.coco)
    coco_skipped: dict[str, int]
    counts_by_kind: dict[str, int]
    counts_by_class: dict[str, int]
    coco_info: dict[str, Any] = field(default_factory=dict)
    delta: DeltaSegment | None = None  # set when the version lands as a delta on its parent
    # What the training outputs hold (manifest `coco`): label policy, labels left out, ...
    coco_facts: dict[str, Any] = field(default_factory=dict)
    # The span JSONL for NER (labelhaul.spans) and its facts (manifest `spans`), when the
    # version has text, document or conversational entities.
    spans: Path | None = None
    spans_facts: dict[str, Any] | None = None
    # LLM preference pairs (labelhaul.preference), when the version has any; manifest
    # `preference` holds what the file holds.
    preference: Path | None = None
    preference_facts: dict[str, Any] | None = None
    # Tables whose digest was computed by `offload` (the sync's mask workers), not here.
    digested_elsewhere: int = 0


@dataclass
class DeltaSegment:
    """A version landed as its parent's segments plus one delta (see labelhaul.segments)."""

    segment: int  # the new segment's number
    reused: list[FileEntry]  # the parent's table and overrides entries, listed again
    tables: dict[str, Path]  # this run's rows, per table that has any
    counts: dict[str, int]
    overrides: Path  # the data row ids the delta supersedes in earlier segments


def digest_table(path: Path, table: str) -> str:
    """Return a table file's order-independent content digest, volatile columns left out."""
    from labelhaul.tables import VOLATILE_COLUMNS, digest_parquet

    return digest_parquet(path, exclude=VOLATILE_COLUMNS.get(table, ()))


# Runs a module-level function with picklable arguments elsewhere (another process) and
# returns its future: `maskpool.MaskPool.submit`.
Offload = Callable[..., "Future[Any]"]


def _offload_or_none(
    offload: Offload | None, fn: Callable[..., Any], *args: Any
) -> Future[Any] | None:
    """`offload(fn, *args)`, or None when there is no pool or it is broken or shut down."""
    if offload is None:
        return None
    try:
        return offload(fn, *args)
    except (BrokenExecutor, RuntimeError):
        return None


def _result_or_here(future: Future[Any] | None, fn: Callable[..., Any], *args: Any) -> Any:
    """The offloaded result, or `fn(*args)` here when nothing was offloaded or its worker
    died (killed, out of memory): nothing is lost either way."""
    if future is not None:
        try:
            return future.result()
        except BrokenExecutor:
            pass
    return fn(*args)


@dataclass
class PartTables:
    """One staged part as assembling writes it: its tables, and the content problems found."""

    tables: dict[str, pa.Table]  # table -> its rows of this part, in the table's schema
    content_errors: bytes  # error record lines (ndjson) of fetched contents


def build_part_tables(
    staging: Path, part: str, failures: Mapping[str, str] | None = None
) -> PartTables:
    """Read one staged part, apply its masks, media and contents, and make its Arrow tables.

    Runs in the flow or in a mask worker (`assemble_version`'s `offload`): it only reads
    the staging folder. `failures`: `read_mask_failures` of the run; None reads them once
    per process (a worker: not pickled again with every part). Memory: one part.
    """
    from labelhaul.tables import apply_mask_results, to_arrow

    if failures is None:
        failures = _mask_failures_once(str(staging))
    results = read_mask_results(staging, part)
    media = read_media_results(staging, part)
    by_table: dict[str, list[dict[str, Any]]] = {}
    for table, record in iter_part_records(staging, part):
        by_table.setdefault(table, []).append(record)
    errors = io.BytesIO()
    apply_part_contents(staging, part, by_table, media, errors)
    tables: dict[str, pa.Table] = {}
    for table, records in by_table.items():
        if table == "annotations":
            records = apply_mask_results(records, results, failures)
        elif table == "data_rows":
            records = apply_media_results(records, media)
        tables[table] = to_arrow(table, records)
    return PartTables(tables, errors.getvalue())


@functools.lru_cache(maxsize=2)
def _mask_failures_once(staging: str) -> dict[str, str]:
    """`read_mask_failures`, once per process and run: the mask stage has ended."""
    return read_mask_failures(Path(staging))


# Below this many parts the flow builds them itself: a worker's first part waits on its
# pyarrow import, which a few parts do not win back (200 labels, 2 parts, on a loaded
# machine: 1.49 s against 1.01 s in the flow alone; bench_assemble).
OFFLOAD_MIN_PARTS = 4


class _PartTablesFeed:
    """The parts' `PartTables` in part order, built by `offload` a few parts ahead, else here.

    At most `ahead` parts are out at once, so the finished ones waiting to be written stay
    few. A part whose worker died (or a pool that is gone) is built here: nothing is lost.
    Fewer than `OFFLOAD_MIN_PARTS` parts are all built here.
    """

    def __init__(
        self,
        staging: Path,
        parts: list[str],
        failures: Mapping[str, str],
        offload: Offload | None,
        ahead: int = 4,
    ) -> None:
        self._staging, self._failures = staging, failures
        self._offload = offload if len(parts) >= OFFLOAD_MIN_PARTS else None
        self._parts = iter(parts)
        self._queue: deque[tuple[str, Future[PartTables] | None]] = deque()
        # The loop in __iter__ submits one more part before it waits on the oldest.
        for part in itertools.islice(self._parts, ahead - 1 if self._offload else 0):
            self._submit(part)

    def _submit(self, part: str) -> None:
        future = _offload_or_none(self._offload, build_part_tables, self._staging, part)
        self._queue.append((part, future))

    def __iter__(self) -> Iterator[PartTables]:
        for part in self._parts:
            self._submit(part)
            yield self._next()
        while self._queue:
            yield self._next()

    def _next(self) -> PartTables:
        part, future = self._queue.popleft()
        built: PartTables = _result_or_here(
            future, build_part_tables, self._staging, part, self._failures
        )
        return built

    def close(self) -> None:
        """Cancel the parts not started (assembling failed): the workers are left idle."""
        for _part, future in self._queue:
            if future is not None:
                future.cancel()
        self._queue.clear()


def _annotation_counts(path: Path) -> tuple[dict[str, int], dict[str, int], bool]:
    """Count objects by kind and class, and tell whether any is a prediction.

    Reads only those three columns, batch by batch, so it costs a fraction of a pass over
    whole records.
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    kinds: dict[str, int] = {}
    classes: dict[str, int] = {}
    has_predictions = False
    pf = pq.ParquetFile(str(path))
    for batch in pf.iter_batches(columns=["annotation_kind", "name", "source"]):
        for column, counts in (("annotation_kind", kinds), ("name", classes)):
            values = pc.fill_null(batch.column(column), "unknown")
            for item in pc.value_counts(values).to_pylist():
                key = item["values"] or "unknown"  # an empty name counts as unknown too
                counts[key] = counts.get(key, 0) + item["counts"]
        has_predictions = has_predictions or bool(
            pc.any(pc.equal(batch.column("source"), "prediction")).as_py()
        )
    return kinds, classes, has_predictions


def assemble_version(
    staging: Path,
    parts: Iterable[str],
    *,
    parent_tables: dict[str, Path] | None = None,
    replaced_data_row_ids: set[str] | None = None,
    category_map: dict[str, Any] | None = None,
    info: dict[str, Any] | None = None,
    parent_manifest: Manifest | None = None,
    max_segments: int = 8,
    compact_fraction: float = 0.25,
    label_policy: str = "benchmark",
    offload: Offload | None = None,
) -> AssembledVersion:
    """Write the version's tables and COCO files from the staged parts (and the parent's).

    Incremental runs pass the parent version's (logical) table files and the ids of the data
    rows the export returned: the parent's rows of every other data row are carried over, the
    returned rows replace theirs. Memory stays bounded by one part plus one row group.

    With `parent_manifest` too, the exported rows are also written apart as a delta segment
    (labelhaul.segments): unless the parent's chain is due for compaction, the version lands
    as the parent's segments plus that delta, so a nightly run uploads only what changed.
    The whole merged tables are still written here: digests, counts and COCO come from them.

    `label_policy` (labelhaul.labelpolicy) picks the label of a data row with several that
    COCO holds; the tables keep every label. A policy other than the default is part of the
    content digest, so changing it makes a new version.

    With `offload` (the sync's mask pool, whose workers are idle by now), its processes
    turn the parts' records into Arrow tables (`build_part_tables`) while this one writes
    them in part order, and digest the finished tables while this one writes COCO and
    counts: on 2 cores most of assembling's CPU leaves the sync's critical path.
    """
    from labelhaul.coco import (
        MASK_KIND,
        frame_index_from_parquet,
        image_kind,
        write_coco,
        write_coco_results,
    )
    from labelhaul.labelpolicy import DEFAULT_LABEL_POLICY, parse_label_policy
    from labelhaul.tables import (
        TableSink,
        copy_rows_except,
        dataset_digest,
        iter_parquet_records,
    )

    out = staging / "version"
    out.mkdir(parents=True, exist_ok=True)
    sink = TableSink(out / "tables")
    replaced = replaced_data_row_ids or set()
    delta_sink = TableSink(out / "delta") if parent_tables and parent_manifest else None
    failures = read_mask_failures(staging)
    # Problems with fetched contents: written again by each attempt, appended to the
    # run's errors once (an assembly retry must not count them twice).
    content_errors = open(staging / CONTENT_ERRORS, "wb")  # noqa: SIM115 - closed below
    # The parts' records become Arrow tables in the mask workers, when there are any,
    # while this process copies the parent's rows and writes what they send, in order.
    feed = _PartTablesFeed(staging, list(parts), failures, offload)
    try:
        if parent_tables:
            for table, path in parent_tables.items():
                copy_rows_except(path, table, replaced, sink)
        for built in feed:
            content_errors.write(built.content_errors)
            for table, data in built.tables.items():
                sink.add_arrow(table, data)
                if delta_sink is not None:
                    delta_sink.add_arrow(table, data)
    finally:
        feed.close()
        content_errors.close()
        paths = sink.close()
        delta_paths = delta_sink.close() if delta_sink is not None else {}
    _append_content_errors_once(staging)
    counts = sink.counts()
    delta = None
    if delta_sink is not None and parent_manifest is not None:
        delta = _plan_delta(
            parent_manifest,
            delta_paths,
            delta_sink.counts(),
            replaced,
            out,
            max_segments=max_segments,
            compact_fraction=compact_fraction,
        )
    pending = {name: _offload_or_none(offload, digest_table, p, name) for name, p in paths.items()}

    kinds, classes, has_predictions = _annotation_counts(paths["annotations"])

    policy = parse_label_policy(label_policy)
    selected = select_labels_in(paths.get("labels"), policy)
    cmap = dict(category_map or {})
    coco_results: dict[str, Path] = {}
    if has_predictions:
        # Results first, so a class that is only predicted still gets a category id. One
        # file per iou type: pycocotools reads the type from a results file's first entry.
        has_masks = any(image_kind(kind) == MASK_KIND for kind in kinds)
        iou_types = ["bbox", "segm"] if has_masks else ["bbox"]
        for iou_type in iou_types:
            path = out / f"coco-results-{iou_type}.json"
            res = write_coco_results(
                path, iter_parquet_records(paths["annotations"]), cmap, iou_type=iou_type
            )
            cmap = res.category_map
            coco_results[iou_type] = path
    coco_path = out / "coco-instances.json"
    summary = write_coco(
        coco_path,
        iter_parquet_records(paths["data_rows"]),
        iter_parquet_records(paths["annotations"]),
        cmap,
        info=info,
        selected_labels=selected,
        frames=frame_index_from_parquet(paths["annotations"], selected),
    )
    from labelhaul.row_content import CONVERSATION, TEXT, count_statuses

    content = count_statuses(
        iter_parquet_records(paths["data_rows"], columns=["mime_type", "content_status"])
    )
    spans_path, spans_facts = _write_spans(out, paths, selected, kinds)
    if spans_facts is not None and content[TEXT]:
        spans_facts["text_rows"] = content[TEXT]
    preference_path, preference_facts = _write_preference(
        out, paths.get("classifications"), paths.get("messages"), paths.get("data_rows")
    )
    if preference_facts is not None and content[CONVERSATION]:
        preference_facts["conversation_rows"] = content[CONVERSATION]
    digested_elsewhere = sum(1 for f in pending.values() if f is not None and f.exception() is None)
    digests = {
        name: _result_or_here(pending[name], digest_table, p, name) for name, p in paths.items()
    }
    digested = dict(digests)
    if policy is not DEFAULT_LABEL_POLICY:
        digested["coco.label_policy"] = policy.value
    return AssembledVersion(
        tables=dict(paths),
        counts=counts,
        table_digests=digests,
        content_digest=dataset_digest(digested),
        coco=coco_path,
        coco_results=coco_results,
        category_map=summary.category_map,
        coco_skipped=summary.skipped,
        counts_by_kind=kinds,
        counts_by_class=classes,
        coco_info=dict(info or {}),
        delta=delta,
        coco_facts={
            "label_policy": policy.value,
            "data_rows_with_several_labels": len(selected),
            "annotations_of_other_labels": summary.labels_not_selected,
            "file_name_collisions": summary.file_name_collisions,
            "category_ids": "feature_schema_id",
            "skipped": dict(summary.skipped),
            # Set: COCO has one image per annotated frame of a video (the reader rebuilds
            # a delta's COCO that way only for versions that say so).
            "frame_images": summary.frame_images,
            "videos": summary.videos,
        },
        spans=spans_path,
        spans_facts=spans_facts,
        preference=preference_path,
        preference_facts=preference_facts,
        digested_elsewhere=digested_elsewhere,
    )


def _write_spans(
    out: Path,
    paths: Mapping[str, Path],
    selected: Mapping[str, str],
    kinds: Mapping[str, int],
) -> tuple[Path | None, dict[str, Any] | None]:
    """Write the span JSONL when the version has entities (labelhaul.spans); else nothing.

    `kinds` counts the annotation kinds of the version: with no entity kind among them
    (an image project) the tables are not read at all.
    """
    from labelhaul.spans import ANNOTATION_COLUMNS, DATA_ROW_COLUMNS, SPAN_KINDS, write_spans
    from labelhaul.tables import iter_parquet_records

    if SPAN_KINDS.isdisjoint(kinds):
        return None, None
    path = out / "spans-ner.jsonl"
    summary = write_spans(
        path,
        iter_parquet_records(paths["data_rows"], columns=DATA_ROW_COLUMNS),
        iter_parquet_records(paths["annotations"], columns=ANNOTATION_COLUMNS),
        selected_labels=selected,
    )
    if not summary.lines and not summary.skipped:
        path.unlink()
        return None, None
    return (path if summary.lines else None), summary.facts()


def _append_content_errors_once(staging: Path) -> None:
    """Append the content problems assembly found to the run's errors, once per run."""
    marker = staging / CONTENT_ERRORS_APPENDED
    if marker.exists():
        return
    with open(staging / CONTENT_ERRORS, "rb") as src, open(staging / "errors.ndjson", "ab") as dst:
        for line in src:
            dst.write(line)
    marker.touch()


def _write_preference(
    out: Path,
    classifications: Path | None,
    messages: Path | None = None,
    data_rows: Path | None = None,
) -> tuple[Path | None, dict[str, Any] | None]:
    """Write the preference pairs JSONL (labelhaul.preference) when any label has one."""
    from labelhaul.preference import COLUMNS, MESSAGE_COLUMNS, write_preference
    from labelhaul.tables import iter_parquet_records

    if classifications is None:
        return None, None
    path = out / "preference-pairs.jsonl"
    summary = write_preference(
        path,
        iter_parquet_records(classifications, columns=COLUMNS),
        iter_parquet_records(messages, columns=MESSAGE_COLUMNS) if messages else None,
        (str(r["data_row_id"]) for r in iter_parquet_records(data_rows, columns=["data_row_id"]))
        if messages and data_rows
        else None,
    )
    if summary.labels == 0:
        path.unlink()
        return None, None
    return path, summary.facts()


def select_labels_in(labels_table: Path | None, policy: str) -> dict[str, str]:
    """Return data row id -> chosen label id from a `labels` Parquet table (see labelpolicy).

    Reads only the policy's columns, twice at most; a table without them (older versions)
    chooses nothing.
    """
    import pyarrow.parquet as pq

    from labelhaul.labelpolicy import LABEL_POLICY_COLUMNS, select_labels_from

    if labels_table is None or not Path(labels_table).exists():
        return {}
    pf = pq.ParquetFile(str(labels_table))
    columns = [c for c in LABEL_POLICY_COLUMNS if c in pf.schema_arrow.names]
    if "label_id" not in columns or "data_row_id" not in columns:
        return {}

    def read() -> Iterator[dict[str, Any]]:
        for batch in pf.iter_batches(columns=columns, batch_size=10_000):
            yield from batch.to_pylist()

    return select_labels_from(policy, read)


def _plan_delta(
    parent: Manifest,
    tables: dict[str, Path],
    counts: dict[str, int],
    replaced: set[str],
    out: Path,
    *,
    max_segments: int,
    compact_fraction: float,
) -> DeltaSegment | None:
    """Return the delta segment to land on `parent`, or None when a new base is due."""
    from labelhaul.segments import manifest_segments, needs_compaction, write_overrides

    overrides = write_overrides(replaced, out / "overrides.parquet")
    nonempty = {name: path for name, path in tables.items() if counts.get(name)}
    size = overrides.stat().st_size + sum(p.stat().st_size for p in nonempty.values())
    if needs_compaction(parent, size, max_segments=max_segments, compact_fraction=compact_fraction):
        return None
    segments = manifest_segments(parent)
    reused: list[FileEntry] = []
    for seg in segments:
        reused.extend(seg.tables.values())
        if seg.overrides is not None:
            reused.append(seg.overrides)
    return DeltaSegment(
        segment=segments[-1].index + 1,
        reused=reused,
        tables=nonempty,
        counts={name: counts[name] for name in nonempty},
        overrides=overrides,
    )


# --------------------------------------------------------------------------- landing


def gzip_file(src: Path, dest: Path) -> Path:
    """Compress `src` into `dest` reproducibly (no timestamp in the gzip header)."""
    with open(src, "rb") as fin, gzip.GzipFile(dest, "wb", compresslevel=6, mtime=0) as fout:
        while chunk := fin.read(1 << 20):
            fout.write(chunk)
    return dest


def fetch_parent_tables(
    store: Any,
    manifest: Manifest,
    dest: Path,
    names: Iterable[str] | None = None,
) -> dict[str, Path]:
    """Download the parent version's tables (streamed) for an incremental merge.

    A table stored as segments is merged into one local file (labelhaul.segments), so the
    caller sees one file per table whatever the parent's layout.

    Args:
        names: the tables wanted (default: all the version lists).
    """
    from labelhaul.segments import manifest_segments, materialize_table

    version = manifest
    dest.mkdir(parents=True, exist_ok=True)
    listed = version.table_names()
    wanted = listed if names is None else sorted(set(names) & set(listed))

    def local(entry: FileEntry) -> Path:
        try:
            path: Path = store.local_copy(entry, dest / "files")
        except FileMissingError as exc:
            raise FileMissingError(
                f"{version.version_id} lists {store.uri_for(entry.key)} but "
                "it is missing, so an incremental sync cannot merge onto it: run a full "
                "sync (mode=full), which lands a new base without reading the parent."
            ) from exc
        return path

    segments = manifest_segments(version)
    if len(segments) == 1:  # one file per table: use it as it is
        return {name: local(segments[0].tables[name]) for name in wanted}
    return {
        name: materialize_table(version, name, local, dest / f"{name}.parquet") for name in wanted
    }


KNOWN_BLOBS = "known-blobs.txt"


def iter_store_blobs(store: Any) -> Iterator[str]:
    """Yield the sha256 of every mask blob the dataset holds (one LIST per 1,000 blobs)."""
    prefix = store.key("blobs/sha256") + "/"
    for key in store.objects.list(prefix):
        name = str(key).rsplit("/", 1)[-1]
        if name.endswith(".png"):
            yield name[:-4]


def write_known_blobs(
    store: Any,
    manifest: Manifest | None,
    staging: Path,
    *,
    verify: bool = False,
) -> int:
    """List the blobs the mask stage may skip in the staging directory; return the lines.

    The mask stage seeds the store's blob index from it, so a known blob costs no request
    at all and a new one a single create-only PUT (no HEAD first). By default the list is
    the parent version's blobs (an incremental run trusts its parent). With `verify` (a
    full sync) it is what the store really holds, listed: a blob that went missing is not
    in it, so the full sync uploads it again instead of listing a blob that is gone.
    With neither the list is empty: every blob goes straight to a create-only PUT.
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    staging.mkdir(parents=True, exist_ok=True)
    target = staging / KNOWN_BLOBS
    count = 0
    with open(target, "w", encoding="ascii") as out:
        if verify:
            for sha in iter_store_blobs(store):
                out.write(sha + "\n")
                count += 1
            return count
        if manifest is None:
            return 0
        tables = fetch_parent_tables(store, manifest, staging / "parent", ["annotations"])
        if "annotations" not in tables:
            return 0
        pf = pq.ParquetFile(str(tables["annotations"]))
        if "mask_sha256" not in pf.schema_arrow.names:
            return 0
        # De-duplicated per batch only: a set of every digest would hold the whole table's
        # blobs as strings (GBs at tens of millions of masks); the reader de-duplicates.
        for batch in pf.iter_batches(columns=["mask_sha256"], batch_size=50_000):
            for sha in pc.unique(pc.drop_null(batch.column(0))).to_pylist():
                if sha:
                    out.write(sha + "\n")
                    count += 1
    return count


def read_known_blobs(staging: Path) -> KnownBlobs | None:
    """Return the index of the blobs `write_known_blobs` listed, or None without a list.

    Streamed into the index: a list of the lines would hold every hex string at once.
    """
    from labelhaul.blobindex import KnownBlobs

    path = staging / KNOWN_BLOBS
    if not path.exists():
        return None
    with open(path, encoding="ascii") as fh:
        return KnownBlobs(line.strip() for line in fh if line.strip())


def missing_version_blobs(store: Any, annotations: Path) -> list[str]:
    """Return the blobs an annotations table references that the store does not hold.

    The store's blobs are listed into a compact index (32 B each), the table is streamed.
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from labelhaul.blobindex import KnownBlobs

    present = KnownBlobs(iter_store_blobs(store))
    missing: set[str] = set()
    pf = pq.ParquetFile(str(annotations))
    if "mask_sha256" not in pf.schema_arrow.names:
        return []
    for batch in pf.iter_batches(columns=["mask_sha256"], batch_size=50_000):
        for sha in pc.unique(pc.drop_null(batch.column(0))).to_pylist():
            if sha and sha not in present:
                missing.add(str(sha))
    return sorted(missing)


def check_after_gc(
    store: Any, writer: VersionWriter, annotations: Path, since: datetime | None
) -> None:
    """Before committing: if a gc started since the run did, check what the version lists.

    gc deletes unreferenced objects past its grace period; this run's files and blobs are
    unreferenced until its manifest lands. A version listing what gc took would be broken
    for every reader, so the run fails instead (nothing committed; a re-run uploads again).

    Raises:
        IncompleteRunError: a file or blob the version would list is gone.
    """
    from labelhaul.errors import IncompleteRunError
    from labelhaul.gc import gc_started_since

    if since is None:
        return
    gc_at = gc_started_since(store, since)
    if gc_at is None:
        return
    gone_files = [e.key for e in writer.files if not store.objects.exists(store.key(e.key))]
    gone_blobs = missing_version_blobs(store, annotations)
    if gone_files or gone_blobs:
        raise IncompleteRunError(
            f"A gc of {store.uri_for('')} started at {gc_at.isoformat()} while this sync ran "
            f"and deleted {len(gone_blobs)} mask blob(s) and {len(gone_files)} file(s) this "
            "version would list: nothing committed. Re-run the sync (it uploads them again), "
            "and keep gc's grace period above the longest sync (no --force while syncing)."
        )
    log.info("A gc ran during this sync; every file and blob of the version is still there")


def land_version(
    store: Any,
    parent: Any,
    staging: Path,
    assembled: AssembledVersion,
    fields: dict[str, Any],
    *,
    since: datetime | None = None,
    store_delta_coco: bool = False,
) -> CommitResult:
    """Upload a version's files (create-only, content-named), then commit it.

    Args:
        store: a `labelhaul.store.DatasetStore`.
        parent: the `LatestPointer` read when the run started (None for the first version):
            the commit's compare-and-swap is against it.
        fields: manifest fields (source, export, counts, watermark, ...).
        since: when the run started: a gc that started later makes the commit check that
            every file and blob it lists is still there (`check_after_gc`).
        store_delta_coco: store the COCO file with a delta version too (settings
            `store_delta_coco`); otherwise it is listed as derived and rebuilt on read.

    Returns:
        The store's `CommitResult`.
    """
    writer = VersionWriter(store, parent)
    if parent is not None and parent.content_digest == assembled.content_digest:
        # Nothing to land: uploading first would leave files no version lists (a COCO file
        # with a new date_created every run) for gc to find.
        return writer.commit(assembled.content_digest, fields)
    fields = dict(fields)
    delta = assembled.delta
    if delta is not None:
        try:
            for entry in delta.reused:
                writer.reuse_file(entry)
        except FileMissingError as exc:
            log.warning("Landing a new base instead of a delta: %s", exc)
            writer = VersionWriter(store, parent)
            delta = None
    if delta is None:
        for name, path in sorted(assembled.tables.items()):
            writer.add_file("table", path, name, ".parquet", name=name, rows=assembled.counts[name])
    else:
        for name, path in sorted(delta.tables.items()):
            writer.add_file(
                "table",
                path,
                name,
                ".parquet",
                name=name,
                rows=delta.counts[name],
                segment=delta.segment,
            )
        writer.add_file(
            "overrides", delta.overrides, "overrides", ".parquet", segment=delta.segment
        )
    if delta is None or store_delta_coco:
        writer.add_file("coco", assembled.coco, "instances", ".json", name="instances")
    else:
        # The COCO file is a function of the tables: a delta version lists its digest and
        # the reader rebuilds it (and checks the digest), so a nightly run does not upload
        # it whole.
        sha, size = file_sha256(assembled.coco)
        derived = {"role": "coco", "name": "instances", "sha256": sha, "bytes": size}
        fields["derived_files"] = [{**derived, "from": "tables"}]
    fields["coco_info"] = assembled.coco_info
    fields["coco"] = assembled.coco_facts
    if assembled.spans_facts is not None:
        fields["spans"] = assembled.spans_facts
    if assembled.spans is not None:
        # A small file beside the tables: uploaded whole in a delta version too.
        writer.add_file("spans", assembled.spans, "ner", ".jsonl", name="ner")
    if assembled.preference is not None:
        # Stored whole in base and delta versions alike: small next to the tables.
        writer.add_file("preference", assembled.preference, "pairs", ".jsonl", name="pairs")
        fields["preference"] = assembled.preference_facts
    for iou_type, path in sorted(assembled.coco_results.items()):
        writer.add_file("coco", path, f"results-{iou_type}", ".json", name=f"results_{iou_type}")
    raw = staging / "raw-export.ndjson.gz"
    if raw.exists():
        writer.add_file("raw", raw, "export", ".ndjson.gz", name="export")
    raw_errors = staging / "raw-errors.ndjson.gz"
    if raw_errors.exists():
        writer.add_file("raw", raw_errors, "errors", ".ndjson.gz", name="export_errors")
    errors = staging / "errors.ndjson"
    if errors.exists() and errors.stat().st_size:
        gz = gzip_file(errors, staging / "run-errors.ndjson.gz")
        writer.add_file("errors", gz, "run-errors", ".ndjson.gz", name="run_errors")
    check_after_gc(store, writer, assembled.tables["annotations"], since)
    return writer.commit(assembled.content_digest, fields)
