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
    data_row_ids.txt          every data row id the export returned (incremental merges)

A part is a run of consecutive data rows holding at most `part_composites` composites (one
Prefect task run each in the mask stage) or `part_rows` rows.
"""

from __future__ import annotations

import dataclasses
import gzip
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import orjson

from labelhaul.masktypes import MaskInstance, MaskJob, MaskResult
from labelhaul.records import ErrorRecord
from labelhaul.store import CommitResult, FileMissingError, VersionWriter, file_sha256

if TYPE_CHECKING:
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
    composites: int = 0
    mask_instances: int = 0
    records_by_table: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    max_last_activity_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)


def job_to_dict(job: MaskJob) -> dict[str, Any]:
    return dataclasses.asdict(job)


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
    """Writes one part's records and mask jobs."""

    def __init__(self, parts_dir: Path, index: int) -> None:
        self.name = f"part-{index:06d}"
        self.records_path = parts_dir / f"{self.name}.records.ndjson"
        self.jobs_path = parts_dir / f"{self.name}.jobs.ndjson"
        self._records = open(self.records_path, "wb")  # noqa: SIM115 - closed in close()
        self._jobs = open(self.jobs_path, "wb")  # noqa: SIM115
        self.rows = 0
        self.composites = 0

    def add(self, tables: dict[str, list[dict[str, Any]]], jobs: list[MaskJob]) -> None:
        for table, records in tables.items():
            for record in records:
                self._records.write(_dumps([table, record]))
                self._records.write(b"\n")
        for job in jobs:
            self._jobs.write(_dumps(job_to_dict(job)))
            self._jobs.write(b"\n")
        self.rows += 1
        self.composites += len(jobs)

    def close(self) -> None:
        self._records.close()
        self._jobs.close()


def stage_export(
    lines: Iterable[tuple[int, bytes]],
    staging: Path,
    *,
    part_composites: int = 100,
    part_rows: int = 2000,
    on_row: Callable[[int], None] | None = None,
) -> StageSummary:
    """Stream the RESULT lines into the staging directory, part by part.

    Args:
        lines: (byte offset, raw line) pairs as the export reader yields them.
        staging: the run's staging directory (created).
        part_composites: cut a part once it holds this many composite masks.
        part_rows: cut a part once it holds this many data rows.
        on_row: called with the running row count (progress reporting).
    """
    from labelhaul.rows import parse_export_line
    from labelhaul.tables import compute_watermark

    staging.mkdir(parents=True, exist_ok=True)
    parts_dir = staging / "parts"
    parts_dir.mkdir(exist_ok=True)
    summary = StageSummary()
    ids_file = open(staging / "data_row_ids.txt", "w", encoding="utf-8")  # noqa: SIM115
    errors_file = open(staging / "errors.ndjson", "ab")  # noqa: SIM115
    raw = gzip.GzipFile(staging / "raw-export.ndjson.gz", "wb", compresslevel=6, mtime=0)
    part: _PartWriter | None = None
    try:
        for offset, line in lines:
            raw.write(line if line.endswith(b"\n") else line + b"\n")
            parsed = parse_export_line(line, offset)
            if isinstance(parsed, ErrorRecord):
                summary.bad_lines += 1
                summary.errors += 1
                errors_file.write(_dumps(parsed.to_dict()) + b"\n")
                continue
            if part is None:
                part = _PartWriter(parts_dir, len(summary.parts) + 1)
                summary.parts.append(part.name)
            part.add(parsed.tables, parsed.mask_jobs)
            ids_file.write(parsed.data_row_id + "\n")
            summary.rows += 1
            summary.composites += len(parsed.mask_jobs)
            summary.mask_instances += sum(len(j.instances) for j in parsed.mask_jobs)
            for table, records in parsed.tables.items():
                summary.records_by_table[table] = summary.records_by_table.get(table, 0) + len(
                    records
                )
            for err in parsed.errors:
                summary.errors += 1
                errors_file.write(_dumps(err.to_dict()) + b"\n")
            if parsed.last_activity_at:
                # Instants, not strings: offsets and precision vary between rows.
                summary.max_last_activity_at = compute_watermark(
                    [parsed.last_activity_at], summary.max_last_activity_at
                ).value
            if on_row is not None:
                on_row(summary.rows)
            if part.composites >= part_composites or part.rows >= part_rows:
                part.close()
                part = None
    finally:
        if part is not None:
            part.close()
        raw.close()
        ids_file.close()
        errors_file.close()
    return summary


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


def append_errors(staging: Path, errors: Iterable[ErrorRecord]) -> int:
    """Append error records to the run's errors file; return how many."""
    n = 0
    with open(staging / "errors.ndjson", "ab") as fh:
        for err in errors:
            fh.write(_dumps(err.to_dict()) + b"\n")
            n += 1
    return n


def read_errors(staging: Path) -> Iterator[dict[str, Any]]:
    yield from read_ndjson(staging / "errors.ndjson")


# --------------------------------------------------------------------------- masks


@dataclass
class MaskPartSummary:
    part: str
    composites: int
    instances: int
    errors: int


def part_jobs(staging: Path, part: str) -> list[MaskJob]:
    return [job_from_dict(d) for d in read_ndjson(staging / "parts" / f"{part}.jobs.ndjson")]


def write_mask_results(
    staging: Path, part: str, results: Iterable[MaskResult], errors: Iterable[ErrorRecord]
) -> tuple[int, int]:
    """Write one part's mask results (atomically: a re-run replaces, never mixes)."""
    target = staging / "parts" / f"{part}.masks.ndjson"
    tmp = target.with_suffix(".tmp")
    n = 0
    with open(tmp, "wb") as fh:
        for r in results:
            fh.write(_dumps(dataclasses.asdict(r)) + b"\n")
            n += 1
    tmp.replace(target)
    return n, append_errors(staging, errors)


def read_mask_results(staging: Path, part: str) -> list[MaskResult]:
    """Return one part's mask results (bounded: one part)."""
    return [result_from_dict(d) for d in read_ndjson(staging / "parts" / f"{part}.masks.ndjson")]


def iter_part_records(staging: Path, part: str) -> Iterator[tuple[str, dict[str, Any]]]:
    yield from read_ndjson(staging / "parts" / f"{part}.records.ndjson")


def read_data_row_ids(staging: Path) -> set[str]:
    path = staging / "data_row_ids.txt"
    if not path.exists():
        return set()
    with open(path, encoding="utf-8") as fh:
        return {line.strip() for line in fh if line.strip()}


# --------------------------------------------------------------------------- assembly

# Columns whose values change between two exports of the same labels: mask URLs carry the
# export task id. They stay in the tables (a user can still fetch a mask from Labelbox) but
# do not count towards the content digest, or every nightly export would make a new version.
VOLATILE_COLUMNS: dict[str, tuple[str, ...]] = {"annotations": ("mask_url", "composite_url")}


@dataclass
class AssembledVersion:
    """The local files of a version, ready to land."""

    tables: dict[str, Path]
    counts: dict[str, int]
    table_digests: dict[str, str]
    content_digest: str
    coco: Path
    coco_results: dict[str, Path]  # iou type -> detection results file (model runs)
    category_map: dict[str, int]
    coco_skipped: dict[str, int]
    counts_by_kind: dict[str, int]
    counts_by_class: dict[str, int]
    coco_info: dict[str, Any] = field(default_factory=dict)
    delta: DeltaSegment | None = None  # set when the version lands as a delta on its parent


@dataclass
class DeltaSegment:
    """A version landed as its parent's segments plus one delta (see labelhaul.segments)."""

    segment: int  # the new segment's number
    reused: list[dict[str, Any]]  # the parent's table and overrides entries, listed again
    tables: dict[str, Path]  # this run's rows, per table that has any
    counts: dict[str, int]
    overrides: Path  # the data row ids the delta supersedes in earlier segments


def digest_table(path: Path, table: str) -> str:
    """Return a table file's order-independent content digest, volatile columns left out."""
    from labelhaul.tables import digest_parquet

    return digest_parquet(path, exclude=VOLATILE_COLUMNS.get(table, ()))


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
    category_map: dict[str, int] | None = None,
    info: dict[str, Any] | None = None,
    parent_manifest: dict[str, Any] | None = None,
    max_segments: int = 8,
    compact_fraction: float = 0.25,
) -> AssembledVersion:
    """Write the version's tables and COCO files from the staged parts (and the parent's).

    Incremental runs pass the parent version's (logical) table files and the ids of the data
    rows the export returned: the parent's rows of every other data row are carried over, the
    returned rows replace theirs. Memory stays bounded by one part plus one row group.

    With `parent_manifest` too, the exported rows are also written apart as a delta segment
    (labelhaul.segments): unless the parent's chain is due for compaction, the version lands
    as the parent's segments plus that delta, so a nightly run uploads only what changed.
    The whole merged tables are still written here: digests, counts and COCO come from them.
    """
    from labelhaul.coco import write_coco, write_coco_results
    from labelhaul.tables import (
        TableSink,
        apply_mask_results,
        copy_rows_except,
        dataset_digest,
        iter_parquet_records,
    )

    out = staging / "version"
    out.mkdir(parents=True, exist_ok=True)
    sink = TableSink(out / "tables")
    replaced = replaced_data_row_ids or set()
    delta_sink = TableSink(out / "delta") if parent_tables and parent_manifest else None
    try:
        if parent_tables:
            for table, path in parent_tables.items():
                copy_rows_except(path, table, replaced, sink)
        for part in parts:
            results = read_mask_results(staging, part)
            by_table: dict[str, list[dict[str, Any]]] = {}
            for table, record in iter_part_records(staging, part):
                by_table.setdefault(table, []).append(record)
            for table, records in by_table.items():
                if table == "annotations":
                    records = apply_mask_results(records, results)
                sink.add(table, records)
                if delta_sink is not None:
                    delta_sink.add(table, records)
    finally:
        paths = sink.close()
        delta_paths = delta_sink.close() if delta_sink is not None else {}
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
    digests = {name: digest_table(path, name) for name, path in paths.items()}

    kinds, classes, has_predictions = _annotation_counts(paths["annotations"])

    cmap = dict(category_map or {})
    coco_results: dict[str, Path] = {}
    if has_predictions:
        # Results first, so a class that is only predicted still gets a category id. One
        # file per iou type: pycocotools reads the type from a results file's first entry.
        iou_types = ["bbox", "segm"] if kinds.get("ImageSegmentationMask") else ["bbox"]
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
    )
    return AssembledVersion(
        tables=dict(paths),
        counts=counts,
        table_digests=digests,
        content_digest=dataset_digest(digests),
        coco=coco_path,
        coco_results=coco_results,
        category_map=summary.category_map,
        coco_skipped=summary.skipped,
        counts_by_kind=kinds,
        counts_by_class=classes,
        coco_info=dict(info or {}),
        delta=delta,
    )


def _plan_delta(
    parent: dict[str, Any],
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
    reused: list[dict[str, Any]] = []
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
    manifest: dict[str, Any],
    dest: Path,
    names: Iterable[str] | None = None,
) -> dict[str, Path]:
    """Download the parent version's tables (streamed) for an incremental merge.

    A table stored as segments is merged into one local file (labelhaul.segments), so the
    caller sees one file per table whatever the parent's layout.

    Args:
        names: the tables wanted (default: all the version lists).
    """
    from labelhaul.segments import manifest_segments, materialize_table, table_names

    dest.mkdir(parents=True, exist_ok=True)
    listed = table_names(manifest)
    wanted = listed if names is None else sorted(set(names) & set(listed))

    def local(entry: Any) -> Path:
        try:
            path: Path = store.local_copy(entry, dest / "files")
        except FileMissingError as exc:
            raise FileMissingError(
                f"{manifest.get('version_id')} lists {store.uri_for(str(entry['key']))} but "
                "it is missing, so an incremental sync cannot merge onto it: run a full "
                "sync (mode=full), which lands a new base without reading the parent."
            ) from exc
        return path

    segments = manifest_segments(manifest)
    if len(segments) == 1:  # one file per table: use it as it is
        return {name: local(segments[0].tables[name]) for name in wanted}
    return {
        name: materialize_table(manifest, name, local, dest / f"{name}.parquet") for name in wanted
    }


KNOWN_BLOBS = "known-blobs.txt"


def write_known_blobs(store: Any, manifest: dict[str, Any] | None, staging: Path) -> int:
    """List the parent version's mask blobs in the staging directory; return the lines.

    The mask stage seeds the store's blob index from it, so a blob the parent already has
    costs no request at all and a new one a single create-only PUT (no HEAD first). With no
    parent the list is empty: every blob goes straight to a create-only PUT.
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    staging.mkdir(parents=True, exist_ok=True)
    target = staging / KNOWN_BLOBS
    count = 0
    with open(target, "w", encoding="ascii") as out:
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


def land_version(
    store: Any,
    parent: Any,
    staging: Path,
    assembled: AssembledVersion,
    fields: dict[str, Any],
) -> CommitResult:
    """Upload a version's files (create-only, content-named), then commit it.

    Args:
        store: a `labelhaul.store.DatasetStore`.
        parent: the `LatestPointer` read when the run started (None for the first version):
            the commit's compare-and-swap is against it.
        fields: manifest fields (source, export, counts, watermark, ...).

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
        writer.add_file("coco", assembled.coco, "instances", ".json", name="instances")
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
        # The COCO file is a function of the tables: a delta version lists its digest and the
        # reader rebuilds it (and checks the digest), so a nightly run does not upload it whole.
        sha, size = file_sha256(assembled.coco)
        fields["derived_files"] = [
            {"role": "coco", "name": "instances", "sha256": sha, "bytes": size, "from": "tables"}
        ]
    fields["coco_info"] = assembled.coco_info
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
    return writer.commit(assembled.content_digest, fields)
