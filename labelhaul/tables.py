"""Table schemas, streaming Parquet writing, mask joins, content digests and watermarks.

Every table has a fixed schema (`SCHEMAS`) so an empty table still has its columns and a
table written from any number of parts has the same types. `TableSink` streams records into
one Parquet file per table in fixed-size row groups, so memory is bounded by the row-group
size, and the same records in the same order always give the same bytes.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from labelhaul.masktypes import MaskResult, mask_key
from labelhaul.timestamps import format_timestamp, parse_timestamp

_S = pa.string()
_F = pa.float64()
_I = pa.int64()
_B = pa.bool_()

# Ids every record carries / every label-level record carries.
_ROW_IDS = [("data_row_id", _S), ("global_key", _S)]
_LABEL_IDS = [
    ("label_id", _S),
    ("source", _S),  # "label" | "prediction"
    ("project_id", _S),
    ("experiment_id", _S),
    ("model_run_id", _S),
]


def _schema(*cols: tuple[str, pa.DataType]) -> pa.Schema:
    return pa.schema([pa.field(name, typ) for name, typ in cols])


SCHEMAS: dict[str, pa.Schema] = {
    "data_rows": _schema(
        *_ROW_IDS,
        ("row_data", _S),  # without signing parameters (labelhaul.urls.strip_signing)
        ("hosting", _S),  # "labelbox" | "user" (own storage) | "inline" (not a URL)
        ("external_id", _S),
        ("mime_type", _S),
        ("width", _I),
        ("height", _I),
        ("exif_rotation", _S),
        ("asset_type", _S),
        ("frame_rate", _F),
        ("frame_count", _I),
        ("content_length", _I),
        ("media_attributes_json", _S),
        ("dataset_id", _S),
        ("dataset_name", _S),
        ("created_at", _S),
        ("updated_at", _S),
        ("last_activity_at", _S),
        ("created_by", _S),
        ("project_id", _S),
        ("project_name", _S),
        ("ontology_id", _S),
        ("task_id", _S),
        ("task_name", _S),
        ("batch_id", _S),
        ("batch_name", _S),
        ("workflow_status", _S),
        ("priority", _I),
        ("consensus_expected_label_count", _I),
        ("project_tags", _S),  # JSON text
        ("experiment_id", _S),
        ("experiment_name", _S),
        ("model_run_id", _S),
        ("model_run_name", _S),
        ("run_data_row_id", _S),
        # Geospatial (#16, part D): the tile layer's bounds as exported in row_data
        # ([[lat, lng], [lat, lng]] JSON text) and its EPSG as a CRS name ("EPSG:3857").
        ("tile_bounds", _S),
        ("tile_crs", _S),
        # With include_media: the media's blob (labelhaul.media.media_key), or why it has none.
        ("media_sha256", _S),
        ("media_bytes", _I),
        ("media_content_type", _S),
        ("media_error", _S),
        # Text-like rows (labelhaul.row_content): the text fetched from a row_data URL
        # (text/plain; null when row_data is the text itself), and where the content came
        # from: inline | fetched | not_fetched | why it is missing (an error kind).
        ("content_text", _S),
        ("content_status", _S),
    ),
    "labels": _schema(
        *_ROW_IDS,
        *_LABEL_IDS,
        ("experiment_name", _S),
        ("model_run_name", _S),
        ("label_kind", _S),
        ("version", _S),
        ("created_at", _S),
        ("updated_at", _S),
        ("created_by", _S),
        ("content_last_updated_at", _S),
        ("reviews", _S),  # JSON text
        ("seconds_to_create", _F),
        ("seconds_to_review", _F),
        ("skipped", _B),
        ("consensus_score", _F),
        ("benchmark_score", _F),
        ("benchmark_reference_label", _S),
    ),
    "annotations": _schema(
        *_ROW_IDS,
        *_LABEL_IDS,
        ("feature_id", _S),
        ("feature_schema_id", _S),
        ("name", _S),
        ("value", _S),
        ("annotation_kind", _S),
        ("confidence", _F),
        ("custom_metrics", _S),  # JSON text
        ("bbox_left", _F),
        ("bbox_top", _F),
        ("bbox_width", _F),
        ("bbox_height", _F),
        ("points", pa.list_(pa.struct([("x", _F), ("y", _F)]))),
        ("point_x", _F),
        ("point_y", _F),
        ("mask_url", _S),
        ("composite_url", _S),
        ("mask_color", pa.list_(pa.int32())),
        ("mask_sha256", _S),
        ("mask_x", _I),
        ("mask_y", _I),
        ("mask_w", _I),
        ("mask_h", _I),
        ("mask_area", _I),
        ("mask_rle", _S),
        ("mask_source", _S),
        ("image_width", _I),
        ("image_height", _I),
        # Frames (video, DICOM): one row per object per frame; null for a still image.
        ("frame", _I),
        ("keyframe", _B),  # key_frame_feature_map: true = key frame, false = interpolated
        ("segment_index", _I),  # which of the feature's `segments` the frame is in
        ("plane", _S),  # DICOM group: "Axial" | "Sagittal" | "Coronal"
        # Text, documents, conversations: character offsets, covered text, tokens, pages.
        ("message_id", _S),
        ("text_start", _I),
        ("text_end", _I),
        ("text", _S),
        ("token_ids", pa.list_(_S)),
        ("page_number", _I),
        ("page_width", _F),
        ("page_height", _F),
        # Geospatial: the geometry in its coordinate reference system.
        ("geometry_geojson", _S),
        ("geometry_wkb", pa.binary()),
        ("crs", _S),  # e.g. "EPSG:4326"
        ("valid", _B),
        ("error_kind", _S),
        ("raw_json", _S),
        # DocumentEntityToken: the token group (one record each) of the text layer (#16).
        ("token_group_id", _S),
        # Multimodal chat / LLM evaluation (#16, part D): message selections and rankings,
        # one row per selected or ranked message (`message_id` above).
        ("rank", _I),  # MessageRanking: 1 = best
        ("parent_message_id", _S),  # the prompt message the responses answer
        ("model_config_name", _S),  # which model configuration wrote the message
    ),
    "classifications": _schema(
        *_ROW_IDS,
        *_LABEL_IDS,
        ("scope", _S),  # "global" | "object"
        ("object_feature_id", _S),
        ("parent_feature_id", _S),
        ("depth", _I),
        ("path", _S),
        ("question_feature_id", _S),
        ("question_schema_id", _S),
        ("question_name", _S),
        ("question_value", _S),
        ("answer_kind", _S),  # "radio" | "checklist" | "text"
        ("answer_feature_id", _S),
        ("answer_schema_id", _S),
        ("answer_name", _S),
        ("answer_value", _S),
        ("text", _S),
        ("confidence", _F),
        # Where the answer applies, when not to the whole data row.
        ("frame_start", _I),  # video/DICOM frame-based classification: one row per range
        ("frame_end", _I),
        ("plane", _S),
        ("message_id", _S),  # conversational / multimodal chat: message-scoped answers
        ("time_start_ms", _I),  # audio: temporal classifications
        ("time_end_ms", _I),
        ("raw_json", _S),  # an answer shape labelhaul does not know, kept whole
    ),
    "relationships": _schema(
        *_ROW_IDS,
        *_LABEL_IDS,
        ("feature_id", _S),
        ("feature_schema_id", _S),
        ("name", _S),
        ("value", _S),
        ("annotation_kind", _S),
        ("source_feature_id", _S),
        ("target_feature_id", _S),
        ("directed", _B),
        ("confidence", _F),
        ("valid", _B),
        ("error_kind", _S),
    ),
    "embeddings": _schema(
        *_ROW_IDS,
        ("embedding_id", _S),
        ("name", _S),
        ("dimensions", _I),
        ("is_custom", _B),
        ("value_index", _I),
        ("values", pa.list_(pa.float32())),
    ),
    "attachments": _schema(
        *_ROW_IDS,
        ("index", _I),
        ("attachment_id", _S),
        ("type", _S),
        ("name", _S),
        ("value", _S),
    ),
    "metadata_fields": _schema(
        *_ROW_IDS,
        ("index", _I),
        ("schema_id", _S),
        ("schema_name", _S),
        ("schema_kind", _S),  # e.g. CustomMetadataString
        ("type", _S),
        ("value", _S),
        ("value_name", _S),
    ),
    "workflow_history": _schema(
        *_ROW_IDS,
        ("project_id", _S),
        ("seq", _I),
        ("action", _S),
        ("created_at", _S),
        ("created_by", _S),
        ("previous_task_id", _S),
        ("previous_task_name", _S),
        ("next_task_id", _S),
        ("next_task_name", _S),
    ),
    # A conversation's messages, when the export holds the conversation JSON (#16, part D).
    "messages": _schema(
        *_ROW_IDS,
        ("message_id", _S),
        ("parent_message_id", _S),
        ("role", _S),  # "human" | "model" | "system" (the actor's role)
        ("actor", _S),  # the actor's id or name
        ("model_name", _S),  # model config name of a model's message (response)
        ("content", _S),  # the message's text (its text parts joined)
        ("position", _I),  # order in the export's message list
        ("raw_json", _S),  # the message as exported (images, files, other parts)
    ),
}
TABLE_NAMES: tuple[str, ...] = tuple(SCHEMAS)

# Columns whose values change between two exports of the same labels: composite mask URLs
# carry the id of the export task that served them. They stay in the tables (a user can
# still fetch a mask from Labelbox while the task lives) but never count as a change: not in
# the content digest (or every nightly export would make a new version), not in a diff.
VOLATILE_COLUMNS: dict[str, tuple[str, ...]] = {"annotations": ("mask_url", "composite_url")}

DEFAULT_ROW_GROUP_SIZE = 10_000
# A 2048-d embedding is ~65 KB as a Python list: 10,000 buffered would be ~650 MB.
ROW_GROUP_SIZES: dict[str, int] = {"embeddings": 256}


def to_arrow(table: str, records: list[dict[str, Any]]) -> pa.Table:
    """Build an Arrow table of `table`'s schema from records (missing keys become null)."""
    return pa.Table.from_pylist(records, schema=SCHEMAS[table])


_RECORDS_PER_CHUNK = 1_000  # records held as dicts before they become an Arrow chunk


class _TableStream:
    """One table's buffer and Parquet writer."""

    def __init__(self, path: Path, schema: pa.Schema, row_group_size: int) -> None:
        self.path = path
        self.schema = schema
        self.row_group_size = row_group_size
        self.records: list[dict[str, Any]] = []
        self.chunks: list[pa.Table] = []
        self.buffered = 0
        self.rows = 0
        self.writer: pq.ParquetWriter | None = None

    def add_records(self, records: Iterable[dict[str, Any]]) -> None:
        for rec in records:
            self.records.append(rec)
            self.buffered += 1
            if self.buffered >= self.row_group_size:
                self._drain(final=False)
            elif len(self.records) >= _RECORDS_PER_CHUNK:
                # Python dicts cost several times their Arrow form: a row group of 10,000
                # records per table, for 9 tables, was the flow's peak (issue 8 bench).
                self._records_to_chunk()

    def add_arrow(self, data: pa.Table | pa.RecordBatch) -> None:
        table = data if isinstance(data, pa.Table) else pa.Table.from_batches([data])
        self._records_to_chunk()
        self.chunks.append(_conform(table, self.schema))
        self.buffered += table.num_rows
        if self.buffered >= self.row_group_size:
            self._drain(final=False)

    def _records_to_chunk(self) -> None:
        if self.records:
            self.chunks.append(pa.Table.from_pylist(self.records, schema=self.schema))
            self.records = []

    def _drain(self, *, final: bool) -> None:
        """Write full row groups (and the remainder when final) so group bounds are stable."""
        self._records_to_chunk()
        if not self.chunks:
            return
        table = pa.concat_tables(self.chunks)
        n = self.row_group_size
        full = table.num_rows if final else (table.num_rows // n) * n
        start = 0
        while start < full:
            size = min(n, full - start)
            self._write(table.slice(start, size))
            start += size
        rest = table.slice(full)
        self.chunks = [rest] if rest.num_rows else []
        self.buffered = rest.num_rows

    def _write(self, table: pa.Table) -> None:
        if self.writer is None:
            self.writer = _open_writer(self.path, self.schema)
        self.writer.write_table(table, row_group_size=self.row_group_size)
        self.rows += table.num_rows

    def close(self) -> None:
        self._drain(final=True)
        if self.writer is None:
            self.writer = _open_writer(self.path, self.schema)
        self.writer.close()


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Select and cast `table` to `schema`; columns an older file lacks become null."""
    columns = [
        table.column(f.name).cast(f.type)
        if f.name in table.column_names
        else pa.nulls(table.num_rows, type=f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def _open_writer(path: Path, schema: pa.Schema) -> pq.ParquetWriter:
    # zstd for size; fixed options and no schema metadata keep the bytes reproducible.
    return pq.ParquetWriter(
        str(path), schema, compression="zstd", store_schema=False, write_statistics=True
    )


class TableSink:
    """Stream records of every table into `<dir>/<table>.parquet`, row group by row group.

    Memory holds at most one row group of buffered records per table: `row_group_size` when
    given, else the table's default (`ROW_GROUP_SIZES`). `close()` writes every table, empty
    ones included, and returns {table: path}.
    """

    def __init__(self, directory: str | Path, row_group_size: int | None = None) -> None:
        if row_group_size is not None and row_group_size < 1:
            raise ValueError("row_group_size must be at least 1")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._streams = {
            name: _TableStream(
                self.directory / f"{name}.parquet",
                schema,
                row_group_size or ROW_GROUP_SIZES.get(name, DEFAULT_ROW_GROUP_SIZE),
            )
            for name, schema in SCHEMAS.items()
        }
        self._closed = False

    def add(self, table: str, records: Iterable[dict[str, Any]]) -> None:
        """Append records (dicts keyed by column name) to `table`."""
        self._stream(table).add_records(records)

    def add_arrow(self, table: str, data: pa.Table | pa.RecordBatch) -> None:
        """Append an Arrow table or batch (its columns are selected and cast to the schema)."""
        self._stream(table).add_arrow(data)

    def counts(self) -> dict[str, int]:
        """Return rows added so far per table (written plus buffered)."""
        return {name: s.rows + s.buffered for name, s in self._streams.items()}

    def close(self) -> dict[str, Path]:
        """Flush and close every table file; return {table: path}."""
        if not self._closed:
            for s in self._streams.values():
                s.close()
            self._closed = True
        return {name: s.path for name, s in self._streams.items()}

    def _stream(self, table: str) -> _TableStream:
        if self._closed:
            raise RuntimeError("TableSink is closed")
        try:
            return self._streams[table]
        except KeyError:
            raise KeyError(f"unknown table {table!r}; known: {sorted(SCHEMAS)}") from None

    def __enter__(self) -> TableSink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# -- masks -------------------------------------------------------------------------------------


# Segmentation masks whose mask_* columns come from the mask stage: images, and video and
# DICOM per frame.
MASK_KINDS = frozenset({"ImageSegmentationMask", "VideoSegmentationMask", "DICOMSegmentationMask"})


def apply_mask_results(
    records: Iterable[dict[str, Any]],
    results: Iterable[MaskResult],
    failures: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Return annotation records with the mask_* columns filled from results by feature id.

    Video and DICOM masks join by (feature id, frame) and, for DICOM, the plane: one result
    per instance per frame (`masktypes.mask_key`). A mask object without a result keeps
    null mask columns and gets `valid` false and `error_kind` from `failures` (`mask_key`
    -> the error record's kind, e.g. `mask_unavailable` or `mask_empty`; `mask_unavailable`
    when no record names it), so a failed mask never looks like a valid one and COCO counts
    it as skipped by that kind.
    """
    by_feature = {mask_key(r.feature_id, r.frame, r.plane): r for r in results}
    failed = failures or {}
    out: list[dict[str, Any]] = []
    for rec in records:
        if rec.get("annotation_kind") not in MASK_KINDS:
            out.append(rec)
            continue
        key = mask_key(rec.get("feature_id") or "", rec.get("frame"), rec.get("plane"))
        res = by_feature.get(key)
        if res is None:
            kind = failed.get(key, "mask_unavailable")
            if rec.get("valid") is False and rec.get("error_kind"):
                kind = str(rec["error_kind"])  # the row's own problem came first
            out.append({**rec, "valid": False, "error_kind": kind})
            continue
        out.append(
            {
                **rec,
                "mask_sha256": res.sha256,
                "mask_x": res.x,
                "mask_y": res.y,
                "mask_w": res.w,
                "mask_h": res.h,
                "mask_area": res.area,
                "mask_rle": res.rle,
                "mask_source": res.source,
                "image_width": res.width,
                "image_height": res.height,
            }
        )
    return out


# -- digests -----------------------------------------------------------------------------------

_MOD = 2**256


def _bytes_as_hex(v: Any) -> str:
    # Binary columns (geometry_wkb) digest as their hex; nothing else reaches here.
    if isinstance(v, bytes):
        return v.hex()
    raise TypeError(f"cannot digest a {type(v).__name__}")


def _row_hash(row: Mapping[str, Any]) -> int:
    canon = orjson.dumps(
        row, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY, default=_bytes_as_hex
    )
    return int.from_bytes(hashlib.sha256(canon).digest(), "big")


def digest_records(
    table: str, records: Iterable[Mapping[str, Any]], exclude: Iterable[str] = ()
) -> str:
    """Return an order-independent digest of records as they would be stored in `table`.

    Records are normalised through the table's schema first (so a missing key and an explicit
    null, or an int and the float it is stored as, digest the same). Columns in `exclude`
    (e.g. signed URLs that change with every export) are left out.
    """
    skip = set(exclude)
    total = 0
    size = _digest_batch_rows(SCHEMAS[table])
    batch: list[dict[str, Any]] = []

    def fold(rows: list[dict[str, Any]]) -> int:
        arrow = to_arrow(table, rows)
        arrow = arrow.select([n for n in arrow.column_names if n not in skip])
        return _sum_rows(arrow.to_pylist())

    for rec in records:
        batch.append(dict(rec))
        if len(batch) >= size:
            total = (total + fold(batch)) % _MOD
            batch = []
    if batch:
        total = (total + fold(batch)) % _MOD
    return f"{total:064x}"


def digest_parquet(path: str | Path, exclude: Iterable[str] = ()) -> str:
    """Return the order-independent digest of a Parquet table, read batch by batch.

    Columns in `exclude` are left out (and never read).
    """
    total = 0
    pf = pq.ParquetFile(str(path))
    skip = set(exclude)
    columns = [n for n in pf.schema_arrow.names if n not in skip]
    for batch in pf.iter_batches(batch_size=_digest_batch_rows(pf.schema_arrow), columns=columns):
        total = (total + _sum_rows(batch.to_pylist())) % _MOD
    return f"{total:064x}"


def _digest_batch_rows(schema: pa.Schema) -> int:
    # Rows become Python dicts to be hashed: keep vector rows (embeddings) to small batches.
    has_vectors = any(
        pa.types.is_list(f.type) and f.type.value_type == pa.float32() for f in schema
    )
    return 256 if has_vectors else 2_000


def _sum_rows(rows: Iterable[Mapping[str, Any]]) -> int:
    return sum(_row_hash(r) for r in rows) % _MOD


def dataset_digest(table_digests: Mapping[str, str]) -> str:
    """Combine per-table digests (name → hex) into one digest, independent of dict order."""
    h = hashlib.sha256()
    for name in sorted(table_digests):
        h.update(f"{name}={table_digests[name]}\n".encode())
    return h.hexdigest()


# -- incremental merges ------------------------------------------------------------------------


def copy_rows_except(
    parent_path: str | Path,
    table: str,
    replaced_data_row_ids: Iterable[str],
    sink: TableSink,
    batch_size: int = DEFAULT_ROW_GROUP_SIZE,
) -> int:
    """Stream the parent version's rows whose data_row_id is not replaced into `sink`.

    Returns the number of rows copied. Reads one batch at a time, so memory stays bounded by
    `batch_size` (plus the set of replaced ids).
    """
    replaced = pa.array(sorted(set(replaced_data_row_ids)), type=pa.string())
    copied = 0
    pf = pq.ParquetFile(str(parent_path))
    for batch in pf.iter_batches(batch_size=batch_size):
        keep = pc.invert(pc.is_in(batch.column("data_row_id"), value_set=replaced))
        # A null data_row_id cannot be replaced by anything: keep it.
        keep = pc.fill_null(keep, True)
        kept = batch.filter(keep)
        if kept.num_rows:
            sink.add_arrow(table, kept)
            copied += kept.num_rows
    return copied


def iter_parquet_records(
    path: str | Path, batch_size: int = 1_000, columns: Iterable[str] | None = None
) -> Iterator[dict[str, Any]]:
    """Yield a Parquet table's rows as dicts (of `columns`, default all), a batch at a time."""
    pf = pq.ParquetFile(str(path))
    wanted = list(columns) if columns is not None else None
    for batch in pf.iter_batches(batch_size=batch_size, columns=wanted):
        yield from batch.to_pylist()


# -- watermark ---------------------------------------------------------------------------------

WATERMARK_CURSOR = "data_row.details.last_activity_at"


@dataclass(frozen=True)
class Watermark:
    """An explicit, named incremental cursor: the latest activity seen so far."""

    cursor: str = WATERMARK_CURSOR
    value: str | None = None  # ISO 8601 UTC, e.g. "2024-04-08T16:34:01.000Z"
    ignored: tuple[str, ...] = field(default=(), compare=False)  # unparseable inputs

    def to_dict(self) -> dict[str, Any]:
        return {"cursor": self.cursor, "value": self.value}


def compute_watermark(
    last_activity_values: Iterable[str | None], parent: Watermark | str | None = None
) -> Watermark:
    """Return the max of the rows' last_activity_at and the parent watermark.

    None values are skipped; values that do not parse are skipped and listed in `ignored`.
    The watermark never moves backwards: with no newer row, the parent's value is kept.
    """
    parent_value = parent.value if isinstance(parent, Watermark) else parent
    best: datetime | None = None
    ignored: list[str] = []
    for value in itertools.chain((parent_value,), last_activity_values):
        if value is None:
            continue
        dt = parse_timestamp(value)
        if dt is None:
            ignored.append(value)
            continue
        if best is None or dt > best:
            best = dt
    return Watermark(
        value=format_timestamp(best) if best is not None else None, ignored=tuple(ignored)
    )
