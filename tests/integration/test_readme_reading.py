"""README "Reading with other tools": every snippet, read from README.md, runs and is right.

The snippets are taken from the README itself (`<!-- snippet: NAME -->` before a python
block), so they cannot drift from what is tested. The local ones run against a version the
real flow landed (emulator, Prefect harness, a local store) and a folder `pull` wrote; the
S3 one against a version on moto's S3 server, DuckDB reading `s3://` itself through httpfs.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from labelhaul.emulator import EmulatorServer
from labelhaul.reader import open_dataset, pull_version
from labelhaul.storage import open_object_store
from labelhaul.store import DatasetStore
from tests.helpers import sync_project_ok as _sync
from tests.integration.test_read_elsewhere import _ann, _land

README = Path(__file__).resolve().parents[2] / "README.md"
SNIPPET = re.compile(r"<!-- snippet: ([\w-]+) -->\n```python\n(.*?)```", re.S)


def snippets() -> dict[str, str]:
    found = dict(SNIPPET.findall(README.read_text(encoding="utf-8")))
    assert set(found) == {"duckdb-local", "duckdb-s3", "polars", "pandas-datasets", "torch"}
    return found


def run_snippet(name: str, **names: Any) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": f"readme_{name.replace('-', '_')}", **names}
    exec(compile(snippets()[name], f"README.md:{name}", "exec"), namespace)
    return namespace


@pytest.mark.usefixtures("prefect_harness")
# pycocotools' Cython decode (annToMask) hits numpy 2's __array__ copy deprecation; the
# result is right (checked below), as in tests/unit/test_coco.py.
@pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)
def test_local_snippets(
    lb_env: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Hugging Face caches under HF_HOME, and must not look for a hub.
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    store = str(tmp_path / "store")
    pid = lb_env.add_synthetic_project(n_rows=6, instances=2)
    _sync(pid, store)
    with open_dataset(store, pid) as ds:
        pulled = tmp_path / "pulled"
        pull_version(ds, "latest", pulled, masks=False)
        annotations = ds.table("annotations")
        coco = ds.coco()
    names = {"STORE": store, "DATASET": pid, "PULLED": str(pulled)}

    got = run_snippet("duckdb-local", **names)
    assert got["per_class"] == sorted(annotations.groupby("name").size().items())

    got = run_snippet("polars", **names)
    kind = annotations[annotations.annotation_kind == "ImageSegmentationMask"]
    assert got["masks"].height == len(kind) > 0
    assert sorted(got["masks"]["feature_id"].to_list()) == sorted(kind.feature_id)
    counts = dict(zip(*got["objects_per_class"].to_pydict().values(), strict=True))
    valid = annotations[annotations["valid"].fillna(False).astype(bool)]
    assert counts == valid.groupby("name").size().to_dict()

    got = run_snippet("pandas-datasets", **names)
    n_boxes = int((annotations.annotation_kind == "ImageBoundingBox").sum())
    assert len(got["boxes"]) == n_boxes > 0 and got["boxes"]["row_data"].notna().all()
    assert got["hf"].num_rows == len(annotations)
    assert set(got["hf"].column_names) == set(annotations.columns)

    got = run_snippet("torch", **names)
    train, (path, target) = got["train"], (got["path"], got["target"])
    assert len(train) == len(coco["images"])
    first = sorted(coco["images"], key=lambda i: i["id"])[0]
    assert path == f"{pulled}/images/{first['file_name']}"
    objects = [a for a in coco["annotations"] if a["image_id"] == first["id"]]
    assert target["boxes"].shape == (len(objects), 4)
    assert target["masks"].shape == (len(objects), first["height"], first["width"])
    # Every item: masks decoded from COCO's RLE have exactly the area COCO states.
    by_image: dict[int, list[dict[str, Any]]] = {}
    for ann in coco["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    rle_checked = 0
    for i, image_id in enumerate(sorted(i["id"] for i in coco["images"])):
        _path, item = train[i]
        anns = by_image.get(image_id, [])
        assert item["labels"].tolist() == [train.index[a["category_id"]] for a in anns]
        for mask, ann in zip(item["masks"], anns, strict=True):
            if isinstance(ann["segmentation"], dict):
                assert int(mask.sum()) == int(ann["area"]) > 0
                rle_checked += 1
    assert rle_checked > 0


def test_s3_duckdb_snippet(
    moto_server: str, s3_store_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import duckdb
    import duckdb_extension_httpfs

    # No network here: put the httpfs build that duckdb-extension-httpfs ships where
    # `INSTALL httpfs` finds it, as a machine that downloaded it once has it.
    home = tmp_path / "home"
    platform = duckdb.connect().sql("PRAGMA platform").fetchone()
    assert platform is not None
    target = home / ".duckdb" / "extensions" / f"v{duckdb.__version__}" / platform[0]
    target.mkdir(parents=True)
    shipped = next(Path(duckdb_extension_httpfs.__file__).parent.rglob("*.duckdb_extension"))
    shutil.copy(shipped, target / "httpfs.duckdb_extension")
    monkeypatch.setenv("HOME", str(home))

    objects = open_object_store(s3_store_uri, endpoint_url=moto_server)
    store = DatasetStore(objects, "proj-s3")
    _land(store, tmp_path / "v1", {"annotations": [_ann("a", "a1"), _ann("b", "b1")]})
    _land(
        store,
        tmp_path / "v2",
        {"annotations": [_ann("b", "b2"), _ann("b", "b3")]},
        segment=1,
        overrides={"b"},
    )
    endpoint = urlsplit(moto_server)
    got = run_snippet(
        "duckdb-s3",
        STORE=s3_store_uri,
        DATASET="proj-s3",
        KEY_ID="testing",
        SECRET_KEY="testing",
        ENDPOINT=endpoint.netloc,
        USE_SSL="false",
    )
    assert got["version"] == "v000002"
    assert got["n_annotations"] == 3  # a1, b2, b3: b1 is superseded by the delta
