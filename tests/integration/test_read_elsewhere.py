"""A version read without labelhaul's reader: DuckDB over tables.sql, Arrow and Polars.

Versions built by hand on both backends (a local directory and moto's S3 server): a base,
then two deltas whose overrides supersede earlier rows, a row with a NULL `data_row_id`
(never overridden; a `NOT IN` would drop every row), a table only the base holds (its rows
of overridden data rows must go too), and a table no segment holds (an empty view with the
table's columns). For the latest version and pinned past ones, every view, Arrow reader and
Polars frame equals the reader's table exactly (values and types, in any order). On S3,
DuckDB reads the `s3://` URIs itself through httpfs, with the secret the README shows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from labelhaul.cli import main
from labelhaul.reader import open_dataset
from labelhaul.segments import write_overrides
from labelhaul.sql_cli import connect_version, version_sql
from labelhaul.storage import ObjectStore
from labelhaul.store import DatasetStore
from labelhaul.tables import SCHEMAS


def _write(name: str, rows: list[dict[str, Any]], path: Path) -> Path:
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMAS[name]), path)
    return path


def _ann(drid: str | None, fid: str, **extra: Any) -> dict[str, Any]:
    return {
        "data_row_id": drid,
        "feature_id": fid,
        "name": "cat",
        "points": [{"x": 1.0, "y": 2.0}],
        "mask_color": [1, 2, 3],
        **extra,
    }


def _land(
    store: DatasetStore,
    work: Path,
    tables: dict[str, list[dict[str, Any]]],
    *,
    segment: int | None = None,
    overrides: set[str] | None = None,
) -> str:
    """Commit a base (segment None) or a delta on top of the latest version."""
    work.mkdir(parents=True)
    writer = store.begin()
    if segment is not None:
        for entry in store.load_manifest("latest").files:
            if entry.role in ("table", "overrides"):
                writer.reuse_file(entry)
    for name, rows in tables.items():
        path = _write(name, rows, work / f"{name}.parquet")
        writer.add_file("table", path, name, ".parquet", segment=segment)
    if overrides is not None:
        path = write_overrides(overrides, work / "overrides.parquet")
        writer.add_file("overrides", path, "overrides", ".parquet", segment=segment)
    result = writer.commit(f"digest-{work.name}")
    assert result.version_id is not None
    return result.version_id


@pytest.fixture
def segmented(object_store: ObjectStore, tmp_path: Path) -> tuple[DatasetStore, list[str]]:
    store = DatasetStore(object_store, "proj-sql")
    v1 = _land(
        store,
        tmp_path / "v1",
        {
            "data_rows": [{"data_row_id": d, "width": 10} for d in "abcd"],
            "annotations": [
                _ann("a", "a1"),
                _ann("b", "b1"),
                _ann("b", "b2"),
                _ann("c", "c1"),
                _ann(None, "orphan"),  # no data row id: kept by every version
            ],
            "classifications": [{"data_row_id": d, "answer_feature_id": f"k{d}"} for d in "abc"],
        },
    )
    # Delta 1: b relabelled (b2 gone, b3 new), d's data row changed; its classification
    # table is absent, so b's and d's classifications go (the overrides say so).
    v2 = _land(
        store,
        tmp_path / "v2",
        {
            "data_rows": [{"data_row_id": "b", "width": 20}, {"data_row_id": "d", "width": 40}],
            "annotations": [_ann("b", "b3", confidence=0.5)],
        },
        segment=1,
        overrides={"b", "d"},
    )
    # Delta 2: b again (its delta-1 rows go too) and a new data row e.
    v3 = _land(
        store,
        tmp_path / "v3",
        {
            "data_rows": [{"data_row_id": "b", "width": 30}, {"data_row_id": "e", "width": 50}],
            "annotations": [_ann("b", "b4"), _ann("e", "e1")],
            "classifications": [{"data_row_id": "e", "answer_feature_id": "ke"}],
        },
        segment=2,
        overrides={"b", "e"},
    )
    return store, [v1, v2, v3]


def _sorted_rows(table: pa.Table) -> list[str]:
    return sorted(json.dumps(r, sort_keys=True, default=str) for r in table.to_pylist())


def _reader_table(ds: Any, name: str, version: str) -> pa.Table:
    return pa.Table.from_batches(list(ds.iter_table(name, version)), schema=SCHEMAS[name])


def _opts(store: DatasetStore) -> dict[str, Any]:
    client = getattr(store.objects, "client", None)
    return {} if client is None else {"endpoint_url": client.meta.endpoint_url}


def _uri(store: DatasetStore) -> str:
    return store.objects.uri_for("")


def test_views_arrow_and_polars_equal_the_reader(
    segmented: tuple[DatasetStore, list[str]],
) -> None:
    store, versions = segmented
    with open_dataset(_uri(store), "proj-sql", **_opts(store)) as ds:
        manifest = ds.load_manifest("latest")
        assert manifest.file("sql", "tables") is not None  # listed in the manifest
        assert len({e.segment_index for e in manifest.files if e.role == "table"}) == 3
        for version in [*versions, "latest"]:
            con = connect_version(ds, version)
            version_id, sql = version_sql(ds, version)
            assert "NOT IN" not in sql
            prefix = "s3://" if _uri(store).startswith("s3://") else "tables/"
            assert f"read_parquet('{prefix}" in sql
            for name in ds.load_manifest(version).table_names():
                want = _reader_table(ds, name, version)
                got = con.execute(f'SELECT * FROM "{name}"').to_arrow_table()
                assert got.schema.names == want.schema.names, (version, name)
                assert [f.type for f in got.schema] == [f.type for f in want.schema], name
                assert _sorted_rows(got) == _sorted_rows(want), (version_id, name)
                arrow = ds.arrow(name, version).read_all()
                assert arrow.schema == want.schema
                assert arrow.equals(want), (version_id, name)  # same order too
                polars = ds.polars(name, version).collect()
                assert polars.columns == want.schema.names
                assert polars.to_dicts() == want.to_pylist(), (version_id, name)
            # A table no segment holds: an empty view with its columns.
            assert con.execute("SELECT count(*) FROM embeddings").fetchone() == (0,)
            described = [r[0] for r in con.execute("DESCRIBE embeddings").fetchall()]
            assert described == SCHEMAS["embeddings"].names
            con.close()

        latest = {r["feature_id"] for r in ds.table("annotations").to_dict("records")}
        assert latest == {"a1", "c1", "orphan", "b4", "e1"}
        con = connect_version(ds, versions[1])
        got = con.execute("SELECT answer_feature_id FROM classifications ORDER BY 1").fetchall()
        assert got == [("ka",), ("kc",)]  # b's and d's overridden, with no replacement
        con.close()

        # Lazily: a filter and a projection pushed into the scans.
        reader = ds.arrow("annotations", columns=["feature_id"], filter=pc.field("name") == "cat")
        assert sorted(reader.read_all().column(0).to_pylist()) == sorted(latest)
        frame = ds.polars("annotations").filter(pl.col("data_row_id") == "b")
        assert frame.select("feature_id").collect().to_series().to_list() == ["b4"]


def test_sql_command(
    segmented: tuple[DatasetStore, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    store, versions = segmented
    uri = _uri(store)
    opts = ["--endpoint-url", _opts(store)["endpoint_url"]] if _opts(store) else []
    assert main(["sql", uri, "--dataset", "proj-sql", *opts, "--print"]) == 0
    printed = capsys.readouterr().out
    with open_dataset(uri, "proj-sql", **_opts(store)) as ds:
        entry = ds.load_manifest().file("sql", "tables")
        assert entry is not None
        assert printed == ds.local_file(entry).read_text()

    query = "SELECT data_row_id, width FROM data_rows ORDER BY 1"
    args = ["sql", uri, versions[1], "--dataset", "proj-sql", *opts, "-c", query, "--json"]
    assert main(args) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows == [
        {"data_row_id": "a", "width": 10},
        {"data_row_id": "b", "width": 20},
        {"data_row_id": "c", "width": 10},
        {"data_row_id": "d", "width": 40},
    ]
    assert main(["sql", uri, "--dataset", "proj-sql", *opts, "-c", query]) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[0].split() == ["data_row_id", "width"] and text[-1] == "(5 rows)"
    assert main(["sql", uri, "--dataset", "proj-sql", *opts, "-c", query, "--csv"]) == 0
    assert capsys.readouterr().out.splitlines()[:2] == ["data_row_id,width", "a,10"]

    # A bad query: one line naming DuckDB's complaint, exit 2, no traceback.
    bad = ["sql", uri, "--dataset", "proj-sql", *opts, "-c", "SELECT nope FROM data_rows"]
    assert main(bad) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("labelhaul sql: error:") and "nope" in err[0]


def test_a_version_without_tables_sql_gets_it_rendered(
    segmented: tuple[DatasetStore, list[str]],
) -> None:
    """A version an earlier labelhaul committed (no tables.sql): `labelhaul sql` renders it."""
    store, versions = segmented
    with open_dataset(_uri(store), "proj-sql", **_opts(store)) as ds:
        stored = version_sql(ds, versions[2])[1]
        entry = ds.load_manifest(versions[2]).file("sql", "tables")
        assert entry is not None
    store.objects.delete(store.key(entry.key))
    raw = json.loads(store.objects.get(store.key(store.manifest_key(versions[2]))) or b"")
    raw["files"] = [f for f in raw["files"] if f["role"] != "sql"]
    key = store.key(store.manifest_key(versions[2]))
    store.objects.delete(key)
    store.objects.put(key, json.dumps(raw).encode())
    with open_dataset(_uri(store), "proj-sql", **_opts(store)) as ds:
        assert version_sql(ds, versions[2])[1] == stored
        con = connect_version(ds, versions[2])
        assert con.execute("SELECT count(*) FROM annotations").fetchone() == (5,)
