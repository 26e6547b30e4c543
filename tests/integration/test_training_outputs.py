"""Training outputs through the real flow: COCO a training script can use, and pull.

The emulator serves the seed project and model run, a synthetic project with every kind, and
a project of the messy shapes real exports have (`labelhaul.emulator.cases`). COCOeval runs
on the shipped files with pycocotools and faster-coco-eval, for both iou types.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from PIL import Image

from labelhaul.emulator import EmulatorServer
from labelhaul.emulator.cases import NFC_KEY, NFD_KEY, case_label_id
from labelhaul.keys import safe_segment
from labelhaul.reader import open_dataset, pull_version
from tests.helpers import sync_project_ok

pytestmark = [
    pytest.mark.usefixtures("prefect_harness"),
    pytest.mark.filterwarnings(
        "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
    ),
]

LIBRARIES = ("pycocotools", "faster_coco_eval")


def _cocoeval(library: str, gt_path: Path, results: Any, iou_type: str) -> list[float]:
    """Run COCOeval as a training script does; `results` is a path or a list of dicts."""
    if library == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    else:
        from faster_coco_eval import COCO
        from faster_coco_eval import COCOeval_faster as COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        dt = gt.loadRes(str(results) if isinstance(results, Path) else results)
        ev = COCOeval(gt, dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(v) for v in ev.stats[:12]]


def _perfect_results(gt_path: Path, iou_type: str) -> list[dict[str, Any]]:
    """Detections equal to the ground truth, as a model that learnt it would output."""
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
    out = []
    for ann in gt.dataset["annotations"]:
        if ann["area"] <= 0:
            continue  # points: not detections
        item = {"image_id": ann["image_id"], "category_id": ann["category_id"], "score": 1.0}
        if iou_type == "bbox":
            item["bbox"] = ann["bbox"]
        else:
            rle = gt.annToRLE(ann)
            counts = rle["counts"]
            counts = counts.decode() if isinstance(counts, bytes) else counts
            item["segmentation"] = {"size": rle["size"], "counts": counts}
        out.append(item)
    return out


def _evaluate_everywhere(gt_path: Path, results: dict[str, Path]) -> None:
    for iou_type in ("bbox", "segm"):
        res = results.get(iou_type)
        if res is None:
            # Written to a file, as a training script does (faster-coco-eval's loadRes turns
            # an in-memory list's boxes into arrays it then cannot compare).
            res = gt_path.with_name(f"perfect-{iou_type}.json")
            res.write_text(json.dumps(_perfect_results(gt_path, iou_type)))
        for library in LIBRARIES:
            stats = _cocoeval(library, gt_path, res, iou_type)
            assert len(stats) == 12, (library, iou_type)
            assert stats[0] > 0, (library, iou_type, stats)


def test_seed_project_coco_evaluates_in_both_libraries(
    lb_env: EmulatorServer, tmp_path: Path
) -> None:
    store = str(tmp_path / "store")
    sync_project_ok(lb_env.seed_project_id, store)
    with open_dataset(store, lb_env.seed_project_id) as ds:
        gt_path = ds.coco_path()
        coco = ds.coco()
    kinds = {
        tuple(sorted(k for k in a if k in ("keypoints", "segmentation")))
        for a in coco["annotations"]
    }
    assert ("keypoints", "segmentation") in kinds  # points, and boxes/polygons/masks mixed
    _evaluate_everywhere(gt_path, {})


def test_synthetic_project_coco_evaluates_in_both_libraries(
    lb_env: EmulatorServer, tmp_path: Path
) -> None:
    store = str(tmp_path / "store")
    pid = lb_env.add_synthetic_project(n_rows=4, instances=3, width=64, height=48)
    sync_project_ok(pid, store)
    with open_dataset(store, pid) as ds:
        _evaluate_everywhere(ds.coco_path(), {})


def test_model_run_shipped_results_evaluate_in_both_libraries(
    lb_env: EmulatorServer, tmp_path: Path
) -> None:
    from labelhaul.flows.sync_model_run import sync_model_run

    store = str(tmp_path / "store")
    run_id = lb_env.seed_model_run_id
    state = sync_model_run(run_id, store=store, return_state=True)
    assert state.is_completed(), state.message
    with open_dataset(store, run_id) as ds:
        gt_path = ds.coco_path()
        results = {t: ds.coco_path(name=f"results_{t}") for t in ("bbox", "segm")}
        ann = ds.table("annotations")
        segm = json.loads(results["segm"].read_text())
    polygon_feature = ann[
        (ann["source"] == "prediction") & (ann["annotation_kind"] == "ImagePolygon")
    ]["feature_id"].iloc[0]
    assert polygon_feature in {r["feature_id"] for r in segm}  # polygon predictions are segm
    _evaluate_everywhere(gt_path, results)


def _instance_mask(lb_env: EmulatorServer, url: str) -> np.ndarray:
    png = requests.get(url, headers={"Authorization": f"Bearer {lb_env.api_key}"}, timeout=30)
    png.raise_for_status()
    with Image.open(io.BytesIO(png.content)) as img:
        return (np.asarray(img.convert("L")) > 0).astype(np.uint8) * 255


def test_messy_project_gives_training_outputs_a_script_can_match(
    lb_env: EmulatorServer,
    s3_store_uri: str,
    moto_server: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    from labelhaul.labelpolicy import LabelPolicy

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server)
    pid = lb_env.add_training_cases_project()
    spec = lb_env.synthetic_spec(pid)
    synthetic = lb_env.add_synthetic_project(n_rows=2, instances=2, width=64, height=48)
    first = sync_project_ok(pid, s3_store_uri)
    sync_project_ok(synthetic, s3_store_uri)
    assert first["version_id"] == "v000001"
    with open_dataset(s3_store_uri, pid, endpoint_url=moto_server) as ds:
        coco = ds.coco()
        labels = ds.table("labels")
        manifest = ds.manifest()
        card = ds.store.objects.get(f"{pid}/versions/v000001/README.md").decode()
        ann = ds.table("annotations")
        gt_path = tmp_path / "instances.json"
        gt_path.write_bytes(ds.coco_path().read_bytes())
        out = tmp_path / "pulled"
        pulled = pull_version(ds, "latest", out, workers=4)
    with open_dataset(s3_store_uri, synthetic, endpoint_url=moto_server) as ds:
        synthetic_cats = {c["feature_schema_id"]: c["id"] for c in ds.coco()["categories"]}

    images = {img["data_row_id"]: img for img in coco["images"]}
    assert len(images) == 8
    names = [img["file_name"] for img in coco["images"]]
    assert len(set(names)) == 8  # unique within the file
    by_row = [images[spec.data_row_id(i)] for i in range(8)]
    assert by_row[0]["file_name"] == spec.global_key(0)
    assert by_row[1]["file_name"] == "scan-0001.png"  # external id
    uploaded = f"{spec.id('up', 2)}-PI588568_13-107_0_32.png"
    assert by_row[2]["file_name"] == uploaded  # percent-decoded, no query string
    assert by_row[3]["file_name_collision"] == uploaded
    assert by_row[3]["file_name"].startswith(uploaded[:-4] + "~")
    assert (by_row[4]["file_name"], by_row[5]["file_name"]) == (NFC_KEY, NFD_KEY)
    for img in coco["images"]:
        assert "?" not in img["file_name"] and "%" not in img["file_name"]
        url = img["coco_url"] or ""
        assert "Signature" not in url and "Expires" not in url and "KeyName" not in url
    assert manifest["coco"]["file_name_collisions"] == 1

    # Consensus row: the tables keep the three labels, COCO holds the benchmark reference's.
    row0 = spec.data_row_id(0)
    assert set(labels[labels["data_row_id"] == row0]["label_id"]) == {
        case_label_id(spec, w) for w in "ABC"
    }
    image0 = by_row[0]["id"]
    assert {a["label_id"] for a in coco["annotations"] if a["image_id"] == image0} == {
        case_label_id(spec, "C")
    }
    per_label = len(ann[ann["label_id"] == case_label_id(spec, "C")])
    assert per_label and len(ann[ann["data_row_id"] == row0]) == 3 * per_label
    assert manifest["coco"]["label_policy"] == "benchmark"
    assert manifest["coco"]["data_rows_with_several_labels"] == 1
    assert "Label policy `benchmark`" in card

    # Category ids follow the feature schema: the same ids as the other synthetic project.
    cats = {c["feature_schema_id"]: c["id"] for c in coco["categories"]}
    shared = cats.keys() & synthetic_cats.keys()
    assert len(shared) >= 6 and {k: cats[k] for k in shared} == {
        k: synthetic_cats[k] for k in shared
    }
    _evaluate_everywhere(gt_path, {})

    # pull: every data row its own folder, every mask exact, only the chosen label's masks.
    folders = json.loads((out / "mask_folders.json").read_text())
    assert len(set(folders.values())) == len(folders) == 8
    assert folders[spec.data_row_id(4)] == safe_segment(NFC_KEY)
    assert folders[spec.data_row_id(5)].startswith(safe_segment(NFC_KEY) + "~")
    assert folders[spec.data_row_id(7)] == safe_segment(spec.data_row_id(6))
    assert folders[spec.data_row_id(6)].startswith(safe_segment(spec.data_row_id(6)) + "~")
    masks = ann[
        (ann["annotation_kind"] == "ImageSegmentationMask")
        & ((ann["data_row_id"] != row0) | (ann["label_id"] == case_label_id(spec, "C")))
    ]
    assert pulled["masks"] == len(masks) == 16
    for _, row in masks.iterrows():
        path = (
            out / "masks" / folders[row["data_row_id"]] / f"{safe_segment(row['feature_id'])}.png"
        )
        with Image.open(path) as img:
            np.testing.assert_array_equal(np.asarray(img), _instance_mask(lb_env, row["mask_url"]))

    # Another policy, as a flow parameter: a new version whose COCO holds the latest label.
    second = sync_project_ok(pid, s3_store_uri, label_policy=LabelPolicy.latest)
    assert second["created"] and second["version_id"] == "v000002"
    with open_dataset(s3_store_uri, pid, endpoint_url=moto_server) as ds:
        coco2 = ds.coco()
        assert ds.manifest()["coco"]["label_policy"] == "latest"
    assert {a["label_id"] for a in coco2["annotations"] if a["image_id"] == image0} == {
        case_label_id(spec, "B")
    }
