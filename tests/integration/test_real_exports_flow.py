"""Real Labelbox export shapes (issue 12, sections 1-3) through the real sync flow.

The emulator reproduces each shape (docs/ARCHITECTURE.md); the flow runs under Prefect's
engine against it, landing on the local store and on moto's S3 server.
"""

from __future__ import annotations

import gzip
import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from PIL import Image

from labelhaul import seed
from labelhaul.emulator import EmulatorServer
from labelhaul.emulator.synthetic import ground_truth_masks
from labelhaul.reader import diff_versions, open_dataset
from labelhaul.urls import is_signed
from tests.helpers import sync_project_ok as _sync

pytestmark = pytest.mark.usefixtures("prefect_harness")
MASK = "ImageSegmentationMask"


@pytest.fixture(params=["local", "s3"])
def store(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    moto_server: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (store URI, options for open_dataset) on each backend."""
    if request.param == "local":
        yield str(tmp_path / "store"), {}
    else:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server)
        yield request.getfixturevalue("s3_store_uri"), {"endpoint_url": moto_server}


def _ndjson_gz(ds: Any, role: str, name: str) -> list[dict[str, Any]]:
    data = gzip.decompress(Path(ds.local_file(ds.file_entry(role, name))).read_bytes())
    return [orjson.loads(line) for line in data.splitlines()]


# --------------------------------------------------------------------------- section 1


def test_re_signed_exports_of_unchanged_data_make_one_version_with_stable_urls(
    lb_env: EmulatorServer, store: tuple[str, dict[str, Any]]
) -> None:
    uri, opts = store
    pid = lb_env.add_synthetic_project(n_rows=8, instances=2)
    first = _sync(pid, uri)
    second = _sync(pid, uri)
    assert first["export_task_ids"] != second["export_task_ids"]
    assert first["created"] and not second["created"]
    assert second["current_version_id"] == "v000001"
    with open_dataset(uri, pid, **opts) as ds:
        assert ds.versions() == ["v000001"]
        rows = ds.table("data_rows")
        assert not any(is_signed(u) for u in rows["row_data"])
        assert rows["hosting"].value_counts().to_dict() == {"labelbox": 6, "user": 2}
        # The signed URLs, and the task id in the composite URLs, stay in the raw export.
        raw = _ndjson_gz(ds, "raw", "export")
        task = first["export_task_ids"][0]
        hosted = [
            r["data_row"]["row_data"] for r in raw if "labelbox.com" in r["data_row"]["row_data"]
        ]
        assert len(hosted) == 6 and all("Signature=" in u for u in hosted)
        assert f"/tasks/{task}/masks/" in orjson.dumps(raw).decode()


def test_diff_and_incremental_merge_ignore_signatures_and_task_ids(
    lb_env: EmulatorServer, tmp_path: Path
) -> None:
    from labelhaul.flows.params import SyncMode

    uri = str(tmp_path / "store")
    pid = lb_env.add_synthetic_project(n_rows=6, instances=2)
    spec = lb_env.synthetic_spec(pid)
    _sync(pid, uri)
    lb_env.edit_rows(pid, [2])
    assert _sync(pid, uri)["created"]
    # An incremental run that re-exports every row (a wide overlap) changes nothing.
    again = _sync(pid, uri, mode=SyncMode.incremental, overlap_minutes=10**7)
    assert again["mode"] == "incremental" and again["rows_exported"] == 6
    assert not again["created"]
    with open_dataset(uri, pid) as ds:
        assert ds.versions() == ["v000001", "v000002"]
        diff = diff_versions(ds, "v000001", "v000002")
    rows, objects = diff["tables"]["data_rows"], diff["tables"]["annotations"]
    assert (rows["changed"], rows["changed_ids"]) == (1, [spec.data_row_id(2)])
    # Only the relabelled row's objects changed (its box moved, its masks were redrawn).
    assert objects["changed"] == 1 + spec.instances
    assert {spec.parse_id(f)[1] for f in objects["changed_ids"]} == {2}  # type: ignore[index]


# --------------------------------------------------------------------------- section 2


def test_a_project_export_lands_only_that_project(
    lb_env: EmulatorServer, store: tuple[str, dict[str, Any]], tmp_path: Path
) -> None:
    uri, opts = store
    pid = lb_env.add_synthetic_project(n_rows=5, instances=1)
    consensus = lb_env.add_shared_project(pid, rows=[0, 1, 2])
    base = _sync(pid, uri)
    shared = _sync(consensus, uri)
    assert "other_project_entry" not in base["errors_by_kind"]
    with open_dataset(uri, pid, **opts) as ds:
        labels = ds.table("labels")
        assert len(labels) == 5 and set(labels["project_id"]) == {pid}
        assert set(ds.table("data_rows")["project_id"]) == {pid}
        assert len(ds.table("relationships")) == 5
    with open_dataset(uri, consensus, **opts) as ds:
        labels = ds.table("labels")
        assert len(labels) == 3 and set(labels["project_id"]) == {consensus}
        assert len(ds.table("data_rows")) == 3
    assert shared["counts"]["labels"] == 3

    # An export that carries other projects' entries anyway: they are records, not data.
    lb_env.only_this_project = False
    leaky = _sync(pid, str(tmp_path / "leaky"))
    assert leaky["errors_by_kind"] == {"other_project_entry": 3}
    with open_dataset(str(tmp_path / "leaky"), pid) as ds:
        assert len(ds.table("labels")) == 5
        assert ds.manifest()["content_digest"] == base_digest(uri, pid, opts)
        errors = [
            e for e in _ndjson_gz(ds, "errors", "run_errors") if e["kind"] == "other_project_entry"
        ]
    assert {e["extra"]["entry_id"] for e in errors} == {consensus}
    assert all(e["extra"]["path"] == f"projects.{consensus}" and e["extra"]["raw"] for e in errors)


def base_digest(uri: str, pid: str, opts: dict[str, Any]) -> str:
    with open_dataset(uri, pid, **opts) as ds:
        digest: str = ds.manifest()["content_digest"]
    return digest


# --------------------------------------------------------------------------- section 3


def test_pre_2024_export_lands_exact_instance_masks_without_false_errors(
    lb_env: EmulatorServer, store: tuple[str, dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    from labelhaul.flows.params import SyncMode

    uri, opts = store
    pid = lb_env.add_synthetic_project(n_rows=8, instances=3, legacy=True)
    spec = lb_env.synthetic_spec(pid)
    result = _sync(pid, uri)
    assert result["errors_by_kind"] == {}
    paths = [e.path for e in lb_env.request_log if e.request_class == "mask"]
    assert not [p for p in paths if "/masks/" in p]  # no composite exists to fetch
    assert any(p.endswith("/index/1/mask") for p in paths)
    assert any(p.endswith("/mask") and "/index/1/" not in p for p in paths)
    with_objects = [r for r in range(8) if spec.has_objects(r)]
    with open_dataset(uri, pid, **opts) as ds:
        rows = ds.table("data_rows")
        assert rows["global_key"].isna().all()
        assert sorted(rows["external_id"]) == sorted(spec.external_id(r) for r in range(8))
        assert len(ds.table("labels")) == sum(spec.has_label(r) for r in range(8))
        assert len(ds.table("relationships")) == len(with_objects)  # listed twice, landed once
        ann = ds.table("annotations")
        assert ann["valid"].all()
        masks = ann[ann["annotation_kind"] == MASK]
        assert len(masks) == spec.instances * len(with_objects)
        assert set(masks["mask_source"]) == {"instance"}
        for _, row in masks.iterrows():
            _, r, _ = spec.parse_id(row["feature_id"])  # type: ignore[misc]
            truth = ground_truth_masks(spec, r)[row["feature_id"]]
            assert np.array_equal(ds.mask(row) > 0, truth), row["feature_id"]

    # No last_activity_at in these rows: an incremental run says so and runs full.
    with caplog.at_level(logging.WARNING):
        again = _sync(pid, uri, mode=SyncMode.incremental)
    assert again["mode"] == "full" and not again["created"]
    assert "cannot sync incrementally" in caplog.text
    assert "rows active since None" not in caplog.text


def test_export_file_with_instance_masks_folder(lb_env: EmulatorServer, tmp_path: Path) -> None:
    """`--masks DIR` with `<feature id>.png` instance masks, both URL shapes, no composite."""
    row = seed.sample_project_export()
    old_pid = next(iter(row["projects"]))
    pid = "cprecompositeproject00001"
    row["projects"] = {pid: row["projects"][old_pid]}
    row["media_attributes"].update(width=40, height=30)
    masks_dir = tmp_path / "masks"
    masks_dir.mkdir()
    rng = np.random.default_rng(5)
    truth: dict[str, np.ndarray] = {}
    objects = row["projects"][pid]["labels"][0]["annotations"]["objects"]
    for n, obj in enumerate(o for o in objects if o["annotation_kind"] == MASK):
        fid = obj["feature_id"]
        obj.pop("composite_mask")
        tail = "/index/1/mask" if n % 2 else "/mask"
        obj["mask"] = {
            "url": f"https://api.labelbox.com/api/v1/projects/{pid}/annotations/{fid}{tail}"
        }
        truth[fid] = rng.random((30, 40)) < 0.3
        buf = io.BytesIO()
        Image.fromarray(np.where(truth[fid], 255, 0).astype(np.uint8)).save(buf, format="PNG")
        (masks_dir / f"{fid}.png").write_bytes(buf.getvalue())
    export = tmp_path / "export.ndjson"
    export.write_bytes(orjson.dumps(row) + b"\n")
    assert lb_env.load_project(export, masks_dir) == pid

    result = _sync(pid, str(tmp_path / "store"))
    assert not [k for k in result["errors_by_kind"] if k.startswith("mask")]
    with open_dataset(str(tmp_path / "store"), pid) as ds:
        masks = ds.table("annotations").query("annotation_kind == @MASK")
        assert len(masks) == len(truth) == 5
        for _, ann in masks.iterrows():
            assert np.array_equal(ds.mask(ann) > 0, truth[ann["feature_id"]])


def test_a_fresh_signed_url_for_a_landed_row_comes_from_the_sdk_lookup(
    lb_env: EmulatorServer, lb_client: Any, tmp_path: Path
) -> None:
    """What the README and the dataset card tell users to do for a working media URL."""
    from labelhaul.urls import strip_signing

    pid = lb_env.add_synthetic_project(n_rows=4, instances=1)
    _sync(pid, str(tmp_path / "store"))
    with open_dataset(str(tmp_path / "store"), pid) as ds:
        rows = ds.table("data_rows")
    for _, row in rows.iterrows():
        fresh = lb_client.get_data_row(row["data_row_id"]).row_data
        assert strip_signing(fresh) == row["row_data"]
        if row["hosting"] == "labelbox":
            assert is_signed(fresh)
