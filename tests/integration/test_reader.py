"""Reader and CLI over a small version built by hand, on both backends."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from labelhaul import reader_cli
from labelhaul.errors import NotFoundError
from labelhaul.maskcodec import encode_png_1bit
from labelhaul.reader import diff_versions, open_dataset, pull_version
from labelhaul.storage import ObjectStore, open_object_store
from labelhaul.store import DatasetStore, digest_entries

W, H = 20, 12
GLOBAL_KEY = "images/cat 01.jpg"  # a slash and a space: must become one safe directory


def expected_mask() -> np.ndarray:
    full = np.zeros((H, W), dtype=np.uint8)
    full[2:6, 3:8] = 255
    full[3, 4] = 0  # a hole, so a filled bbox would not pass
    return full


def annotation(fid: str, dr: str, gk: str | None, **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "data_row_id": dr,
        "global_key": gk,
        "label_id": "lbl-1",
        "source": "label",
        "feature_id": fid,
        "name": "cat",
        "annotation_kind": "ImageBoundingBox",
        "bbox_left": 1.0,
        "bbox_top": 1.0,
        "bbox_width": 2.0,
        "bbox_height": 2.0,
        "mask_sha256": None,
        "mask_x": None,
        "mask_y": None,
        "mask_w": None,
        "mask_h": None,
        "image_width": W,
        "image_height": H,
    }
    base.update(extra)
    return base


def build_version(
    store: DatasetStore, workdir: Path, data_rows: list[str], annotations: list[dict[str, Any]]
) -> str:
    """Land one version: data_rows and annotations tables, a COCO file, mask blobs."""
    workdir.mkdir(parents=True, exist_ok=True)
    writer = store.begin()
    dr_path = workdir / "data_rows.parquet"
    pq.write_table(
        pa.table(
            {
                "data_row_id": data_rows,
                "global_key": [GLOBAL_KEY if d == "dr1" else None for d in data_rows],
            }
        ),
        dr_path,
    )
    ann_path = workdir / "annotations.parquet"
    pq.write_table(pa.Table.from_pylist(annotations), ann_path)
    coco_path = workdir / "instances.json"
    coco_path.write_text(json.dumps({"images": [{"id": 1}], "annotations": [], "categories": []}))
    writer.add_file("table", dr_path, "data_rows", ".parquet")
    writer.add_file("table", ann_path, "annotations", ".parquet")
    writer.add_file("coco", coco_path, "instances", ".json")
    result = writer.commit(digest_entries(writer.files), {"counts": {"data_rows": len(data_rows)}})
    assert result.version_id is not None
    return str(result.version_id)


@pytest.fixture
def two_versions(object_store: ObjectStore, tmp_path: Path) -> tuple[DatasetStore, str, str]:
    store = DatasetStore(object_store, "proj-1")
    crop = expected_mask()[2:6, 3:8] > 0
    png = encode_png_1bit(crop)
    sha = hashlib.sha256(png).hexdigest()
    store.put_blob(sha, png)
    mask_row = annotation(
        "f-mask",
        "dr1",
        GLOBAL_KEY,
        annotation_kind="ImageSegmentationMask",
        mask_sha256=sha,
        mask_x=3,
        mask_y=2,
        mask_w=5,
        mask_h=4,
    )
    v1 = build_version(
        store,
        tmp_path / "v1",
        ["dr1", "dr2"],
        [mask_row, annotation("f-box", "dr2", None), annotation("f-gone", "dr2", None)],
    )
    v2 = build_version(
        store,
        tmp_path / "v2",
        ["dr1", "dr2", "dr3"],
        [
            mask_row,
            annotation("f-box", "dr2", None, bbox_left=9.0),
            annotation("f-new", "dr3", None),
        ],
    )
    return store, v1, v2


def store_opts(store: DatasetStore) -> dict[str, Any]:
    client = getattr(store.objects, "client", None)
    return {} if client is None else {"endpoint_url": client.meta.endpoint_url}


def test_tables_masks_and_coco(two_versions: tuple[DatasetStore, str, str]) -> None:
    store, v1, v2 = two_versions
    root = store.objects.uri_for("").rstrip("/")
    with open_dataset(root, "proj-1", **store_opts(store)) as ds:
        assert ds.versions() == [v1, v2] and ds.latest() == v2
        anns = ds.table("annotations")
        assert sorted(anns["feature_id"]) == ["f-box", "f-mask", "f-new"]
        assert len(ds.table("annotations", v1)) == 3
        mask = ds.mask("f-mask")
        assert mask.dtype == np.uint8 and mask.shape == (H, W)
        np.testing.assert_array_equal(mask, expected_mask())
        row = anns[anns["feature_id"] == "f-mask"].iloc[0]
        np.testing.assert_array_equal(ds.mask(row, v1), expected_mask())
        with pytest.raises(NotFoundError):
            ds.mask("f-box")
        assert ds.coco()["images"] == [{"id": 1}]
        assert ds.manifest(v1)["counts"] == {"data_rows": 2}
        with pytest.raises(NotFoundError, match="annotations"):
            ds.table("nope")
        with pytest.raises(NotFoundError):
            ds.manifest("v000009")


def test_dataset_root_as_uri(two_versions: tuple[DatasetStore, str, str]) -> None:
    store, _, v2 = two_versions
    with open_dataset(store.uri_for("").rstrip("/"), None, **store_opts(store)) as ds:
        assert ds.latest() == v2


def test_diff(two_versions: tuple[DatasetStore, str, str]) -> None:
    store, v1, v2 = two_versions
    with open_dataset(store.objects.uri_for("").rstrip("/"), "proj-1", **store_opts(store)) as ds:
        d = diff_versions(ds, v1, v2)
        rows, anns = d["tables"]["data_rows"], d["tables"]["annotations"]
        assert (rows["added"], rows["removed"], rows["changed"], rows["unchanged"]) == (1, 0, 0, 2)
        assert rows["added_ids"] == ["dr3"]
        assert (anns["added"], anns["removed"], anns["changed"], anns["unchanged"]) == (1, 1, 1, 1)
        assert anns["added_ids"] == ["f-new"] and anns["removed_ids"] == ["f-gone"]
        assert anns["changed_ids"] == ["f-box"]
        same = diff_versions(ds, v2, v2)
        assert same["tables"]["annotations"]["same_file"] is True
        assert same["files_changed"] == []


def test_pull_layout(two_versions: tuple[DatasetStore, str, str], tmp_path: Path) -> None:
    store, v1, _ = two_versions
    out = tmp_path / "out"
    with open_dataset(store.objects.uri_for("").rstrip("/"), "proj-1", **store_opts(store)) as ds:
        summary = pull_version(ds, v1, out)
    assert summary["masks"] == 1
    assert (out / "tables" / "annotations.parquet").is_file()
    assert (out / "tables" / "data_rows.parquet").is_file()
    assert json.loads((out / "coco" / "instances.json").read_text())["images"] == [{"id": 1}]
    assert json.loads((out / "manifest.json").read_text())["version_id"] == v1
    masks = list((out / "masks").rglob("*.png"))
    assert [p.relative_to(out / "masks").as_posix() for p in masks] == [
        "images%2Fcat%2001.jpg/f-mask.png"
    ]
    with Image.open(masks[0]) as img:
        assert img.mode == "L" and img.size == (W, H)
        np.testing.assert_array_equal(np.asarray(img), expected_mask())
    assert not list(out.rglob("*.part"))


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="labelhaul")
    reader_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    code = int(args.func(args))
    return code, capsys.readouterr().out


def test_cli_json(
    two_versions: tuple[DatasetStore, str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store, v1, v2 = two_versions
    root = store.objects.uri_for("").rstrip("/")
    endpoint = store_opts(store).get("endpoint_url")
    extra = ["--endpoint-url", endpoint] if endpoint else []
    code, out = run_cli(["versions", root, "--dataset", "proj-1", "--json", *extra], capsys)
    listing = json.loads(out)
    assert code == 0 and listing["latest"] == v2
    assert [v["version_id"] for v in listing["versions"]] == [v1, v2]
    assert listing["versions"][0]["data_rows"] == 2

    dataset_root = store.uri_for("").rstrip("/")
    code, out = run_cli(["show", dataset_root, v1, "--json", *extra], capsys)
    assert json.loads(out)["version_id"] == v1
    code, out = run_cli(["show", dataset_root, *extra], capsys)
    assert f"version:  {v2}" in out and f"parent:   {v1}" in out
    code, out = run_cli(["show", dataset_root, v1, *extra], capsys)
    assert "parent:   -\n" in out and "None" not in out  # a first version has no parent

    code, out = run_cli(["diff", dataset_root, v1, v2, "--json", *extra], capsys)
    assert json.loads(out)["tables"]["annotations"]["changed_ids"] == ["f-box"]
    code, out = run_cli(["diff", dataset_root, v1, v2, *extra], capsys)
    assert "+1 -1 ~1" in out

    dest = tmp_path / "pulled"
    code, out = run_cli(["pull", dataset_root, "latest", str(dest), "--json", *extra], capsys)
    summary = json.loads(out)
    assert code == 0 and summary["version_id"] == v2 and summary["masks"] == 1
    assert (dest / "masks" / "images%2Fcat%2001.jpg" / "f-mask.png").is_file()

    code, out = run_cli(["versions", dataset_root, *extra], capsys)
    assert v1 in out and f"{v2}" in out and "*" in out
    assert "None" not in out  # the first version's parent shows as "-"


def test_empty_dataset_says_what_to_do(tmp_path: Path) -> None:
    open_object_store(str(tmp_path / "store"))
    with open_dataset(str(tmp_path / "store"), "nothing-here") as ds:
        assert ds.versions() == []
        with pytest.raises(NotFoundError, match="labelhaul sync"):
            ds.manifest()


def test_real_cli_entry_point(
    two_versions: tuple[DatasetStore, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    from labelhaul.cli import main

    store, _, v2 = two_versions
    extra = [f"--endpoint-url={e}"] if (e := store_opts(store).get("endpoint_url")) else []
    dataset_root = store.uri_for("")
    assert main(["show", dataset_root, "--json", *extra]) == 0
    assert json.loads(capsys.readouterr().out)["version_id"] == v2
    assert main(["show", dataset_root, "v000009", *extra]) == 1
    assert "No version v000009" in capsys.readouterr().err
    assert main(["show", dataset_root, "not-a-version", *extra]) == 1
    assert "labelhaul versions" in capsys.readouterr().err


def test_versions_of_a_store_root_lists_its_datasets(
    two_versions: tuple[DatasetStore, str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from labelhaul.cli import main

    store, _, _ = two_versions
    build_version(DatasetStore(store.objects, "proj-2"), tmp_path / "p2", ["dr9"], [])
    extra = [f"--endpoint-url={e}"] if (e := store_opts(store).get("endpoint_url")) else []
    root = store.objects.uri_for("").rstrip("/")

    assert main(["versions", root, *extra]) == 0
    out = capsys.readouterr().out
    assert "no versions yet" not in out
    assert "proj-1" in out and "proj-2" in out and "--dataset" in out

    assert main(["versions", root, "--json", *extra]) == 0
    assert json.loads(capsys.readouterr().out)["datasets"] == ["proj-1", "proj-2"]

    assert main(["versions", root, "--dataset", "proj-l", *extra]) == 1
    err = capsys.readouterr().err
    assert "proj-l" in err and "proj-1, proj-2" in err
