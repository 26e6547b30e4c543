"""Each version's tables as DuckDB views: the `versions/vN/tables.sql` every commit writes.

A table stored as a base plus delta segments (labelhaul.segments) is not the union of its
files: a delta's data rows supersede their rows in earlier segments. Globbing
`tables/annotations-*.parquet` counts every version's files, and even a version's own files
count the superseded rows twice. `render_tables_sql` writes, for one version, one view per
table that resolves it exactly as the reader does:

    CREATE OR REPLACE VIEW "annotations" AS
    SELECT CAST("data_row_id" AS VARCHAR) AS "data_row_id", ... FROM (
      (SELECT CAST(NULL AS VARCHAR) AS "data_row_id", ... LIMIT 0)   -- the columns, typed
      UNION ALL BY NAME
      (SELECT * FROM read_parquet('tables/annotations-<sha>.parquet') AS s
       WHERE NOT EXISTS (SELECT 1 FROM read_parquet(['tables/overrides-<sha>.parquet']) AS o
                         WHERE o."data_row_id" = s."data_row_id"))
      UNION ALL BY NAME
      (SELECT * FROM read_parquet('tables/annotations-<sha2>.parquet'))
    );

`NOT EXISTS`, not `NOT IN`: a NULL in a `NOT IN` list drops every row, and a row whose own
`data_row_id` is NULL is never overridden (the equality is never true). The typed first
branch gives every view the table's columns in schema order even when no segment holds the
table (or an old file lacks a column). Paths are relative to the dataset root for a local
store (run DuckDB there, or `SET file_search_path`) and `s3://` URIs for S3 (DuckDB's httpfs
extension and an S3 secret; README "Reading with other tools").

The SQL is a pure function of the version's table and overrides entries, its id and where
the store is: a commit attempt renders it beside the dataset card, and a reader can render it
again for a version committed before this file existed.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import pyarrow as pa

from labelhaul.manifest import FileEntry
from labelhaul.segments import OVERRIDES_COLUMN, Segment, segments_of


def quote_ident(name: str) -> str:
    """Return `name` as a DuckDB identifier."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    """Return `text` as a DuckDB string literal."""
    return "'" + text.replace("'", "''") + "'"


def duckdb_type(typ: pa.DataType) -> str:
    """Return the DuckDB type of an Arrow type (the ones Parquet tables hold).

    Raises:
        ValueError: an Arrow type with no DuckDB equivalent here (names it).
    """
    t = pa.types
    simple: list[tuple[Callable[[pa.DataType], bool], str]] = [
        (t.is_boolean, "BOOLEAN"),
        (t.is_int8, "TINYINT"),
        (t.is_int16, "SMALLINT"),
        (t.is_int32, "INTEGER"),
        (t.is_int64, "BIGINT"),
        (t.is_uint8, "UTINYINT"),
        (t.is_uint16, "USMALLINT"),
        (t.is_uint32, "UINTEGER"),
        (t.is_uint64, "UBIGINT"),
        (t.is_float16, "FLOAT"),
        (t.is_float32, "FLOAT"),
        (t.is_float64, "DOUBLE"),
        (t.is_string, "VARCHAR"),
        (t.is_large_string, "VARCHAR"),
        (t.is_binary, "BLOB"),
        (t.is_large_binary, "BLOB"),
        (t.is_date32, "DATE"),
    ]
    for test, name in simple:
        if test(typ):
            return name
    if hasattr(t, "is_string_view") and t.is_string_view(typ):
        return "VARCHAR"
    if t.is_timestamp(typ):
        unit = {"s": "TIMESTAMP_S", "ms": "TIMESTAMP_MS", "us": "TIMESTAMP", "ns": "TIMESTAMP_NS"}
        return "TIMESTAMPTZ" if typ.tz else unit[typ.unit]
    if t.is_decimal(typ):
        return f"DECIMAL({typ.precision}, {typ.scale})"
    if t.is_list(typ) or t.is_large_list(typ):
        return f"{duckdb_type(typ.value_type)}[]"
    if t.is_fixed_size_list(typ):
        return f"{duckdb_type(typ.value_type)}[{typ.list_size}]"
    if t.is_struct(typ):
        fields = ", ".join(
            f"{quote_ident(typ.field(i).name)} {duckdb_type(typ.field(i).type)}"
            for i in range(typ.num_fields)
        )
        return f"STRUCT({fields})"
    if t.is_map(typ):
        return f"MAP({duckdb_type(typ.key_type)}, {duckdb_type(typ.item_type)})"
    if t.is_dictionary(typ):
        return duckdb_type(typ.value_type)
    raise ValueError(f"no DuckDB type for the Arrow type {typ}: add it to labelhaul.sqlviews")


def _read(paths: Sequence[str]) -> str:
    if len(paths) == 1:
        return f"read_parquet({quote_literal(paths[0])})"
    return f"read_parquet([{', '.join(quote_literal(p) for p in paths)}])"


def _typed_empty(schema: pa.Schema) -> str:
    cols = ", ".join(
        f"CAST(NULL AS {duckdb_type(f.type)}) AS {quote_ident(f.name)}" for f in schema
    )
    return f"SELECT {cols} LIMIT 0"


def table_view_sql(
    name: str,
    segments: Sequence[Segment],
    schema: pa.Schema | None,
    path_for: Callable[[str], str],
) -> str:
    """Return `CREATE OR REPLACE VIEW name AS ...` for one table of a version.

    Args:
        segments: the version's segments in order (`labelhaul.segments.segments_of`).
        schema: the table's schema (`tables.SCHEMAS`); None for a table this labelhaul has
            no schema of (the files' own columns, by name).
        path_for: a key relative to the dataset root -> the path DuckDB reads.
    """
    branches: list[str] = []
    if schema is not None:
        branches.append(_typed_empty(schema))
    drid = quote_ident(OVERRIDES_COLUMN)
    for i, seg in enumerate(segments):
        entry = seg.tables.get(name)
        if entry is None:
            continue
        later = [s.overrides.key for s in segments[i + 1 :] if s.overrides is not None]
        select = f"SELECT * FROM {_read([path_for(entry.key)])} AS s"
        if later:
            select += (
                f"\n     WHERE NOT EXISTS (SELECT 1 FROM {_read([path_for(k) for k in later])} AS o"
                f" WHERE o.{drid} = s.{drid})"
            )
        branches.append(select)
    if not branches:
        raise ValueError(f"table {name!r} has neither a schema nor a file")
    union = "\n  UNION ALL BY NAME\n  ".join(f"({b})" for b in branches)
    if schema is None:
        body = f"SELECT * FROM (\n  {union}\n)"
    else:
        cols = ",\n  ".join(
            f"CAST({quote_ident(f.name)} AS {duckdb_type(f.type)}) AS {quote_ident(f.name)}"
            for f in schema
        )
        body = f"SELECT\n  {cols}\nFROM (\n  {union}\n)"
    return f"CREATE OR REPLACE VIEW {quote_ident(name)} AS\n{body};\n"


def render_tables_sql(
    files: Iterable[FileEntry],
    *,
    path_for: Callable[[str], str],
    schemas: dict[str, pa.Schema] | None = None,
    header: str = "",
) -> str:
    """Return the DuckDB SQL creating one view per table of a version.

    Every table of `schemas` gets a view (empty, with its columns, when the version holds no
    file of it), and so does every other table the version lists.

    Args:
        files: the version's manifest entries (only tables and overrides are read).
        path_for: a key relative to the dataset root -> the path or URI DuckDB reads.
        schemas: table name -> schema (default: `labelhaul.tables.SCHEMAS`).
        header: comment lines put first (without the `-- `).
    """
    if schemas is None:
        from labelhaul.tables import SCHEMAS

        schemas = SCHEMAS
    entries = list(files)
    segments = segments_of(entries, "this version")
    names = sorted(set(schemas) | {e.name for e in entries if e.role == "table"})
    lines = [f"-- {line}".rstrip() for line in header.splitlines()]
    parts = ["\n".join(lines) + "\n" if lines else ""]
    for name in names:
        parts.append(table_view_sql(name, segments, schemas.get(name), path_for))
    return "\n".join(p for p in parts if p)


def sql_header(dataset_id: str | None, version_id: str, local: bool) -> str:
    """Return the comment `tables.sql` starts with: what it is and how to run it."""
    where = (
        "Paths are relative to the dataset root: run DuckDB there (or SET file_search_path)."
        if local
        else "Paths are s3:// URIs: LOAD httpfs and CREATE SECRET first (README, "
        '"Reading with other tools").'
    )
    return (
        f"labelhaul: the tables of dataset {dataset_id} at {version_id} as DuckDB views.\n"
        "Each view is the table as labelhaul's reader returns it: rows superseded by a later\n"
        "segment's data rows are left out.\n"
        f"{where}\n"
        f"Or: labelhaul sql <store> {version_id} --dataset {dataset_id} -c 'SELECT ...'\n"
    )
