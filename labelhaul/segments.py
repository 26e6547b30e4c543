"""Tables stored as a base segment plus delta segments, merged on read.

A nightly incremental sync changes a few percent of a project's data rows. Uploading every
table whole for that would send most of the dataset again each night, so a version may list
a table as several segments (manifest entries with `role: "table"` and a `segment` number):

- segment 0, the base: every row of the table when it was last compacted;
- segment k > 0, a delta: the rows of the data rows exported by the incremental run that made
  it, with an `overrides` file (`role: "overrides"`, same `segment`) listing those data row
  ids — the export returned them, so their rows in every EARLIER segment are superseded, even
  when the delta has no row of that table for them (an answer removed by relabelling).

The logical table is, segment by segment in order, the rows whose `data_row_id` no later
segment overrides. Rows with a null `data_row_id` are never overridden. The order equals the
merge the sync made locally (the parent's surviving rows, then the exported ones), so the
table digest, the COCO file and the counts are the same as those of a single-file version.

A version whose parent's layout would grow past `MAX_SEGMENTS` segments, or whose deltas
would exceed `COMPACT_FRACTION` of the base's bytes, is written compacted (one base segment):
reads stay cheap and a version never depends on a long chain. Full syncs always compact.

Old manifests, whose table entries carry no `segment`, read as a single base segment.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from labelhaul.manifest import FileEntry, Manifest

MAX_SEGMENTS = 8
COMPACT_FRACTION = 0.25
OVERRIDES_COLUMN = "data_row_id"


@dataclass
class Segment:
    """One segment of a version: its table files and the ids it overrides."""

    index: int
    tables: dict[str, FileEntry] = field(default_factory=dict)  # table -> manifest entry
    overrides: FileEntry | None = None  # manifest entry of the id list (deltas only)


def manifest_segments(manifest: Manifest) -> list[Segment]:
    """Return a version's table segments in order (empty when it lists no table)."""
    return segments_of(manifest.files, manifest.version_id)


def segments_of(files: Iterable[FileEntry], where: str) -> list[Segment]:
    """Return the table segments of a version's file entries, in order.

    Args:
        where: the version, for the error message.
    """
    by_index: dict[int, Segment] = {}
    for entry in files:
        if entry.role not in ("table", "overrides"):
            continue
        index = entry.segment_index
        seg = by_index.setdefault(index, Segment(index))
        if entry.role == "table":
            seg.tables[entry.name] = entry
        else:
            seg.overrides = entry
    segments = [by_index[i] for i in sorted(by_index)]
    for seg in segments[1:]:
        if seg.overrides is None:
            raise ValueError(f"{where}: table segment {seg.index} has no overrides file")
    return segments


def table_fingerprint(manifest: Manifest, name: str) -> tuple[tuple[int, str], ...]:
    """Return what identifies a table's stored form: its segments' (number, sha256).

    Two versions with equal fingerprints list the very same files for the table (and the same
    overrides), so their logical tables are equal without reading them.
    """
    out: list[tuple[int, str]] = []
    for seg in manifest_segments(manifest):
        entry = seg.tables.get(name)
        overrides = seg.overrides.sha256 if seg.overrides else ""
        out.append((seg.index, f"{entry.sha256 if entry else ''}/{overrides}"))
    return tuple(out)


def is_single_file(manifest: Manifest) -> bool:
    """Return True when every table of the version is one file (no deltas)."""
    return len(manifest_segments(manifest)) <= 1


def needs_compaction(
    parent: Manifest | None,
    delta_bytes: int,
    *,
    max_segments: int = MAX_SEGMENTS,
    compact_fraction: float = COMPACT_FRACTION,
) -> bool:
    """Return True when a delta on top of `parent` should be written as a new base instead.

    Args:
        parent: the parent version's manifest (None: there is nothing to add a delta to).
        delta_bytes: the bytes the new delta segment would add (tables and overrides).
        max_segments: segments (base included) a version may have.
        compact_fraction: the deltas' bytes, over the base's, above which to compact.
    """
    if parent is None:
        return True
    segments = manifest_segments(parent)
    if not segments or segments[0].index != 0:
        return True
    if len(segments) + 1 > max_segments:
        return True
    base = sum(e.bytes for e in segments[0].tables.values())
    deltas = delta_bytes + sum(
        e.bytes
        for seg in segments[1:]
        for e in [*seg.tables.values(), *([seg.overrides] if seg.overrides else [])]
    )
    return deltas > compact_fraction * max(base, 1)


def write_overrides(ids: Sequence[str] | set[str], path: Path) -> Path:
    """Write the sorted, de-duplicated data row ids a delta overrides (reproducible bytes)."""
    table = pa.table({OVERRIDES_COLUMN: pa.array(sorted(set(ids)), type=pa.string())})
    pq.write_table(table, str(path), compression="zstd", store_schema=False)
    return path


def read_overrides(path: Path) -> set[str]:
    """Return the data row ids of an overrides file."""
    column = pq.read_table(str(path), columns=[OVERRIDES_COLUMN]).column(0)
    return {str(v) for v in column.to_pylist() if v is not None}


def table_parts(
    manifest: Manifest, name: str, local_file: Callable[[FileEntry], Path]
) -> list[tuple[Path | None, set[str]]]:
    """Return, per segment in order, its file of table `name` and the ids it overrides.

    The file is None where the segment holds no rows of the table; `local_file` returns a
    local path of a manifest entry's file (downloading it).
    """
    parts: list[tuple[Path | None, set[str]]] = []
    for seg in manifest_segments(manifest):
        entry = seg.tables.get(name)
        overrides = read_overrides(local_file(seg.overrides)) if seg.overrides else set()
        parts.append((local_file(entry) if entry else None, overrides))
    return parts


def dropped_ids(parts: Sequence[tuple[Path | None, set[str]]]) -> list[set[str]]:
    """Return, per part of `table_parts`, the ids it loses: those a LATER segment overrides."""
    later: set[str] = set()
    dropped: list[set[str]] = []
    for _path, overrides in reversed(parts):
        dropped.append(set(later))
        later |= overrides
    dropped.reverse()
    return dropped


def iter_merged_batches(
    parts: Sequence[tuple[Path | None, set[str]]],
    schema: pa.Schema | None = None,
    *,
    batch_size: int = 10_000,
    columns: list[str] | None = None,
) -> Iterator[pa.RecordBatch]:
    """Yield the logical table of a segment chain, batch by batch.

    Args:
        parts: per segment in order, its table file (None when the segment has no rows of
            this table) and the data row ids that segment overrides (empty for the base).
        schema: conform every batch to it (a base written by an older labelhaul may lack
            columns); None keeps each file's own schema.
        columns: read only these columns (`data_row_id` is read too when filtering needs it).
    """
    from labelhaul.tables import _conform

    for (path, _overrides), drop in zip(parts, dropped_ids(parts), strict=True):
        if path is None:
            continue
        value_set = pa.array(sorted(drop), type=pa.string()) if drop else None
        pf = pq.ParquetFile(str(path))
        try:
            names = pf.schema_arrow.names
            read = None
            if columns is not None:
                read = [c for c in columns if c in names]
                if value_set is not None and OVERRIDES_COLUMN not in read:
                    read.append(OVERRIDES_COLUMN)
            for batch in pf.iter_batches(batch_size=batch_size, columns=read):
                if value_set is not None:
                    keep = pc.fill_null(
                        pc.invert(pc.is_in(batch.column(OVERRIDES_COLUMN), value_set=value_set)),
                        True,
                    )
                    batch = batch.filter(keep)
                if columns is not None:
                    batch = batch.select([c for c in columns if c in batch.schema.names])
                if schema is None:
                    if batch.num_rows:
                        yield batch
                    continue
                target = (
                    schema
                    if columns is None
                    else pa.schema([schema.field(c) for c in columns if c in schema.names])
                )
                yield from _conform(pa.Table.from_batches([batch]), target).to_batches()
        finally:
            pf.close()


def materialize_table(
    manifest: Manifest,
    name: str,
    local_file: Callable[[FileEntry], Path],
    dest: Path,
) -> Path:
    """Write a version's logical table `name` to one Parquet file at `dest`.

    Args:
        local_file: returns a local path of a manifest entry's file (downloading it).
    """
    from labelhaul.tables import SCHEMAS, _open_writer

    parts = table_parts(manifest, name, local_file)
    schema = SCHEMAS.get(name)
    if schema is None:
        first = next((p for p, _ in parts if p is not None), None)
        if first is None:
            raise ValueError(f"no segment of {manifest.version_id} holds table {name!r}")
        schema = pq.ParquetFile(str(first)).schema_arrow
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    writer = _open_writer(tmp, schema)
    try:
        for batch in iter_merged_batches(parts, schema):
            writer.write_batch(batch)
    finally:
        writer.close()
    tmp.replace(dest)
    return dest
