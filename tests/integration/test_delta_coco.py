"""COCO of incremental versions: rebuilt on read by default, stored when asked; the card says which.

Through the real flow (Prefect harness, emulator, a local store); also checks that the
real flow's delta version carries a `tables.sql` whose views equal the reader's tables.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from labelhaul.flows.params import SyncMode

from labelhaul.emulator import EmulatorServer
from labelhaul.reader import open_dataset, pull_version
from labelhaul.sql_cli import connect_version
from tests.helpers import sync_project_ok as _sync

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_delta_coco_rebuilt_by_default_and_stored_when_asked(
    lb_env: EmulatorServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    store = str(tmp_path / "store")
    monkeypatch.setenv("LABELHAUL_COMPACT_FRACTION", "100")  # small tables: keep deltas
    pid = lb_env.add_synthetic_project(n_rows=8, instances=2)
    _sync(pid, store, mode=SyncMode.full)

    lb_env.edit_rows(pid, [2])
    _sync(pid, store, mode=SyncMode.incremental, overlap_minutes=0)
    with open_dataset(store, pid) as ds:
        manifest = ds.load_manifest()
        assert any(f.segment for f in manifest.files)
        assert manifest.file("coco", "instances") is None
        assert manifest.derived("coco", "instances") is not None
        card = tmp_path / "store" / pid / "versions" / manifest.version_id / "README.md"
        assert "is not stored with this delta version" in card.read_text()
        rebuilt = ds.coco()
        pulled = pull_version(ds, "latest", tmp_path / "pulled", masks=False)
        assert "coco/instances.json" in pulled["files"]  # pull rebuilds it
        # The real flow's delta version: its views equal the reader's tables.
        con = connect_version(ds)
        for name in manifest.table_names():
            view = con.execute(f'SELECT count(*) FROM "{name}"').fetchone()
            assert view == (len(ds.table(name)),), name
        con.close()

    monkeypatch.setenv("LABELHAUL_STORE_DELTA_COCO", "true")
    lb_env.edit_rows(pid, [5])
    _sync(pid, store, mode=SyncMode.incremental, overlap_minutes=0)
    with open_dataset(store, pid) as ds:
        manifest = ds.load_manifest()
        assert sorted({f.segment_index for f in manifest.files if f.role == "table"}) == [0, 1, 2]
        stored = manifest.file("coco", "instances")
        assert stored is not None and manifest.derived_files is None
        card = tmp_path / "store" / pid / "versions" / manifest.version_id / "README.md"
        said = "The COCO file is stored with this version (`LABELHAUL_STORE_DELTA_COCO` was on)"
        assert f"{said}: `{stored.key}`" in card.read_text()
        coco = json.loads(ds.local_file(stored).read_bytes())
        assert coco["annotations"] and len(coco["images"]) == len(rebuilt["images"])
        assert ds.coco() == coco
