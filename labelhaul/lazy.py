"""A version's tables for Arrow and Polars, overrides applied lazily (nothing materialised).

`Dataset.arrow(table)` and `Dataset.polars(table)` resolve a table stored as a base plus
delta segments (labelhaul.segments) the way the reader does: each segment's rows minus the
data rows a later segment overrides, segment by segment. Nothing is read until the caller
consumes the result: Arrow scans each segment file with the row filter (and any filter and
columns the caller passes) pushed into the Parquet scan; Polars gets one `scan_parquet` per
segment under a filter, so its optimiser pushes the caller's predicates and projections
into every file. Memory holds the overridden ids (a delta's changed data rows) and a batch.

For an S3 store the segment files are downloaded once into the `Dataset`'s cache (as the
reader does); nothing is held in memory.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from labelhaul.errors import ConfigError
from labelhaul.segments import OVERRIDES_COLUMN, dropped_ids, table_parts

INSTALL_POLARS = "pip install 'labelhaul[polars]'"


def segment_parts(ds: Any, name: str, version: str) -> tuple[list[tuple[Path, set[str]]], Any]:
    """Return, per segment holding `name`, its local file and the ids later segments override.

    Also returns the table's schema (`tables.SCHEMAS`, else the first file's).

    Raises:
        NotFoundError: the version has no such table (lists the tables it has).
    """
    from labelhaul.tables import SCHEMAS

    manifest = ds.load_manifest(version)
    if name not in manifest.table_names():
        ds.file_entry("table", name, version)  # raises, listing the tables there are
    all_parts = table_parts(manifest, name, ds.local_file)
    parts = [
        (path, drop)
        for (path, _), drop in zip(all_parts, dropped_ids(all_parts), strict=True)
        if path is not None
    ]
    schema = SCHEMAS.get(name)
    if schema is None:
        schema = pq.read_schema(parts[0][0])
    return parts, schema


def arrow_reader(
    ds: Any,
    name: str,
    version: str = "latest",
    *,
    columns: list[str] | None = None,
    filter: Any = None,
    batch_size: int = 64_000,
) -> pa.RecordBatchReader:
    """Return a `pyarrow.RecordBatchReader` over one table of a version (read as consumed).

    Args:
        columns: only these columns (default: every column of the table's schema).
        filter: a `pyarrow.compute` expression, pushed into each segment's scan.
    """
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    parts, schema = segment_parts(ds, name, version)
    names = list(columns) if columns is not None else schema.names
    unknown = [c for c in names if c not in schema.names]
    if unknown:
        raise ConfigError(f"table {name!r} has no column(s) {unknown}; it has {schema.names}")
    out_schema = pa.schema([schema.field(c) for c in names])
    key = pc.field(OVERRIDES_COLUMN)

    def batches() -> Iterator[pa.RecordBatch]:
        for path, dropped in parts:
            expr = filter
            if dropped and OVERRIDES_COLUMN in schema.names:
                keep = key.is_null() | ~key.isin(pa.array(sorted(dropped), type=pa.string()))
                expr = keep if expr is None else (expr & keep)
            # The table's schema: a column an older file lacks reads as null, types are cast.
            data = pads.dataset(str(path), schema=schema, format="parquet")
            scanner = data.scanner(columns=names, filter=expr, batch_size=batch_size)
            for batch in scanner.to_batches():
                if batch.num_rows:
                    yield batch

    return pa.RecordBatchReader.from_batches(out_schema, batches())


def import_polars() -> Any:
    """Return the polars module, or raise naming the pip install."""
    try:
        import polars
    except ImportError as exc:
        raise ConfigError(
            f"Dataset.polars needs Polars: {INSTALL_POLARS} (or pip install polars)."
        ) from exc
    return polars


def polars_frame(ds: Any, name: str, version: str = "latest") -> Any:
    """Return a `polars.LazyFrame` of one table of a version (nothing read until collected)."""
    pl = import_polars()
    parts, schema = segment_parts(ds, name, version)
    typed = pl.from_arrow(schema.empty_table())
    frames = [typed.lazy()]
    for path, dropped in parts:
        frame = pl.scan_parquet(str(path))
        if dropped:
            col = pl.col(OVERRIDES_COLUMN)
            frame = frame.filter(col.is_null() | ~col.is_in(sorted(dropped)))
        frames.append(frame)
    # diagonal: a column an older file lacks becomes null; then the schema's order and types.
    merged = pl.concat(frames, how="diagonal_relaxed")
    return merged.select([pl.col(c).cast(typed.schema[c]) for c in schema.names])
