"""`labelhaul sql`: a version's tables as DuckDB views (`versions/vN/tables.sql`).

`labelhaul sql URI [VERSION] --dataset ID --print` prints the version's SQL;
`-c QUERY` opens an in-memory DuckDB connection, creates the views and prints the query's
result (a text table, or `--json` / `--csv`). `connect_version` is the same connection for
Python code. For an S3 store it loads DuckDB's httpfs extension and creates an S3 secret from
boto3's credential chain and endpoint (`AWS_ENDPOINT_URL_S3`, `--endpoint-url`); the secret
lives in that connection only and is never printed.

Internal: not part of labelhaul's public API (that is `labelhaul/__init__.py`).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from typing import Any
from urllib.parse import urlsplit

from labelhaul.errors import ConfigError
from labelhaul.keys import SQL_NAME, SQL_ROLE
from labelhaul.sqlviews import quote_literal

INSTALL_SQL = "pip install 'labelhaul[sql]'"


class SqlUsageError(ConfigError):
    """A query DuckDB refused, or DuckDB is not installed: the message names the fix."""


def import_duckdb() -> Any:
    """Return the duckdb module, or raise naming the pip install."""
    try:
        import duckdb
    except ImportError as exc:
        raise SqlUsageError(
            f"labelhaul sql needs DuckDB's Python package: {INSTALL_SQL} (or pip install duckdb)."
        ) from exc
    return duckdb


def version_sql(ds: Any, version: str = "latest") -> tuple[str, str]:
    """Return (version id, its `tables.sql` text): the stored file, or rendered when absent.

    A version committed before labelhaul wrote `tables.sql` gets the same SQL rendered from
    its manifest.
    """
    manifest = ds.load_manifest(version)
    entry = manifest.file(SQL_ROLE, SQL_NAME)
    if entry is not None:
        text = ds.local_file(entry).read_text(encoding="utf-8")
    else:
        text = ds.store.render_tables_sql(manifest.files, manifest.version_id).decode("utf-8")
    return manifest.version_id, text


def _load_httpfs(con: Any) -> None:
    """Load httpfs: installed already, or from the `duckdb-extension-httpfs` package."""
    try:
        con.execute("LOAD httpfs")
        return
    except Exception as first:
        try:
            from pathlib import Path

            import duckdb_extension_httpfs

            root = Path(duckdb_extension_httpfs.__file__).parent
            path = next(root.rglob("httpfs.duckdb_extension"))
            con.execute(f"LOAD {quote_literal(str(path))}")
            return
        except Exception:
            pass
        import duckdb

        raise SqlUsageError(
            "DuckDB's httpfs extension (for s3:// paths) is not installed and could not be "
            f"loaded ({str(first).splitlines()[0]}): run `INSTALL httpfs` once in DuckDB with "
            f"network access, or pip install duckdb-extension-httpfs=={duckdb.__version__}."
        ) from first


def configure_s3(con: Any, objects: Any) -> None:
    """Let DuckDB read the store's bucket: httpfs and a secret scoped to the bucket.

    Credentials come from boto3's chain (as the store's own client); the endpoint and region
    from the store's client, so `AWS_ENDPOINT_URL_S3` and `--endpoint-url` apply.
    """
    import boto3

    _load_httpfs(con)
    options: list[str] = ["TYPE s3", f"SCOPE {quote_literal(f's3://{objects.bucket}')}"]
    credentials = boto3.session.Session().get_credentials()
    if credentials is not None:
        frozen = credentials.get_frozen_credentials()
        options.append(f"KEY_ID {quote_literal(str(frozen.access_key))}")
        options.append(f"SECRET {quote_literal(str(frozen.secret_key))}")
        if frozen.token:
            options.append(f"SESSION_TOKEN {quote_literal(frozen.token)}")
    region = objects.client.meta.region_name
    if region:
        options.append(f"REGION {quote_literal(region)}")
    endpoint = objects.client.meta.endpoint_url
    if endpoint and not urlsplit(endpoint).netloc.endswith("amazonaws.com"):
        parts = urlsplit(endpoint)
        options.append(f"ENDPOINT {quote_literal(parts.netloc)}")
        options.append("URL_STYLE 'path'")
        options.append(f"USE_SSL {'true' if parts.scheme == 'https' else 'false'}")
    con.execute(f"CREATE OR REPLACE SECRET labelhaul_store ({', '.join(options)})")


def connect_version(ds: Any, version: str = "latest") -> Any:
    """Return an in-memory DuckDB connection holding the views of one version's tables.

    Args:
        ds: a `labelhaul.reader.Dataset`.
        version: `latest` or a version id.
    """
    duckdb = import_duckdb()
    _version_id, sql = version_sql(ds, version)
    con = duckdb.connect()
    store = ds.store
    if store.is_local():
        root = store.objects.local_path(store.key("_latest.json")).parent
        con.execute(f"SET file_search_path = {quote_literal(str(root))}")
    else:
        configure_s3(con, store.objects)
    con.execute(sql)
    return con


def register(subparsers: Any) -> None:
    """Add the `sql` command."""
    from labelhaul.reader_cli import _common

    p = subparsers.add_parser(
        "sql",
        help="a version's tables as DuckDB views: print the SQL, or run a query",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  labelhaul sql ./datasets --dataset ckproject1 --print\n"
        "  labelhaul sql ./datasets v000002 --dataset ckproject1 -c "
        "'SELECT name, count(*) FROM annotations GROUP BY 1'\n",
    )
    _common(p)
    p.add_argument("version", metavar="VERSION", nargs="?", default="latest")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--print", action="store_true", help="print the version's tables.sql")
    what.add_argument("-c", dest="query", metavar="QUERY", help="run QUERY against the views")
    p.add_argument("--csv", action="store_true", help="print the result as CSV")
    p.set_defaults(func=cmd_sql)


def cmd_sql(args: argparse.Namespace) -> int:
    """Print a version's SQL, or run a query against its views."""
    from labelhaul.reader_cli import _open

    if args.print:
        with _open(args) as ds:
            _version_id, sql = version_sql(ds, args.version)
        sys.stdout.write(sql)
        return 0
    duckdb = import_duckdb()
    with _open(args) as ds:
        con = connect_version(ds, args.version)
        try:
            result = con.execute(args.query)
        except duckdb.Error as exc:
            first = str(exc).splitlines()[0]
            print(f"labelhaul sql: error: {first}", file=sys.stderr)
            return 2
        if result.description is None:
            return 0
        columns = [d[0] for d in result.description]
        rows = result.fetchall()
    _print_rows(columns, rows, "json" if args.json else "csv" if args.csv else "text")
    return 0


def _print_rows(columns: list[str], rows: list[tuple[Any, ...]], fmt: str) -> None:
    if fmt == "json":
        json.dump([dict(zip(columns, r, strict=True)) for r in rows], sys.stdout, default=str)
        sys.stdout.write("\n")
        return
    if fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
        return
    shown = [["NULL" if v is None else str(v) for v in r] for r in rows]
    widths = [max([len(c), *(len(r[i]) for r in shown)]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    print("  ".join("-" * w for w in widths))
    for r in shown:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    print(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
