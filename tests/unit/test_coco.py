"""COCO output loads in pycocotools, keeps category ids stable, and carries decodable RLE."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from labelhaul import seed
from labelhaul.coco import (
    image_id_for,
    shoelace_area,
    write_coco,
    write_coco_results,
)
from labelhaul.masktypes import MaskResult
from labelhaul.rows import ParsedRow, parse_export_line
from labelhaul.tables import apply_mask_results

# pycocotools' Cython decode hits numpy 2's __array__ copy deprecation on every call; the
# result is right, and the fix belongs upstream (pycocotools _mask.pyx).
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

W, H = 64, 48


def _parse(export: dict[str, Any]) -> ParsedRow:
    # A small image so real full-size RLEs stay cheap.
    export["media_attributes"].update(width=W, height=H)
    row = parse_export_line(orjson.dumps(export), 0)
    assert isinstance(row, ParsedRow)
    return row


def _instance_mask(seed_no: int) -> np.ndarray:
    m = np.zeros((H, W), dtype=np.uint8)
    m[5 + seed_no : 20 + seed_no, 3 + 2 * seed_no : 30] = 1
    return m


def _mask_results(row: ParsedRow, sources: tuple[str, ...] = ("label",)) -> list[MaskResult]:
    out = []
    masks = [
        a
        for a in row.tables["annotations"]
        if a["annotation_kind"] == "ImageSegmentationMask" and a["source"] in sources
    ]
    for i, ann in enumerate(masks):
        m = _instance_mask(i)
        rle = mask_utils.encode(np.asfortranarray(m))
        x, y, w, h = (int(v) for v in mask_utils.toBbox(rle))
        out.append(
            MaskResult(
                data_row_id=row.data_row_id,
                label_id=ann["label_id"],
                feature_id=ann["feature_id"],
                sha256=f"{i:064x}",
                x=x,
                y=y,
                w=w,
                h=h,
                area=int(m.sum()),
                height=H,
                width=W,
                rle=rle["counts"].decode(),
                source="composite",
            )
        )
    return out


def test_project_coco_loads_in_pycocotools_with_decodable_rle(tmp_path: Path) -> None:
    row = _parse(seed.sample_project_export())
    results = _mask_results(row)
    anns = apply_mask_results(row.tables["annotations"], results[:4])  # 1 mask failed
    # The same data row listed twice in a row (two projects) is one image.
    images = row.tables["data_rows"] * 2
    summary = write_coco(tmp_path / "instances.json", images, anns)
    coco = COCO(str(tmp_path / "instances.json"))

    assert summary.images == 1 and len(coco.imgs) == 1
    (img,) = coco.imgs.values()
    assert img["id"] == image_id_for(row.data_row_id)
    assert img["file_name"] == "2560px-Kitano_Street_Kobe01s5s4110.jpeg"
    assert (img["width"], img["height"]) == (W, H)
    # 4 boxes + 1 polygon + 1 point + 4 masks; the polyline and the failed mask are skipped.
    assert summary.annotations == len(coco.anns) == 10
    # A mask without a result is marked invalid (issue 13 item 8), counted by its kind.
    assert summary.skipped == {"polyline": 1, "mask_unavailable": 1}
    names = {c["name"] for c in coco.cats.values()}
    assert names == {
        "bounding_box",
        "bbox_with_radio_subclass",
        "point",
        "polygon",
        "mask",
        "mask_with_text_subclass",
    }
    assert {k: v["id"] for k, v in summary.category_map.items()} == {
        c["feature_schema_id"]: c["id"] for c in coco.cats.values()
    }
    by_feature = {a["feature_id"]: a for a in coco.anns.values()}
    assert all(a["iscrowd"] == 0 for a in coco.anns.values())

    box = by_feature["clur5tlyq1n2d07dcg9xldg90"]
    assert box["bbox"] == [2096.0, 1264.0, 144.0, 425.0] and box["area"] == 144.0 * 425.0
    poly = by_feature["clur5tlyr1n2m07dc4x6xhzep"]
    assert len(poly["segmentation"][0]) == 32
    assert poly["bbox"][0] == 1345.264 and poly["bbox"][2] == pytest.approx(2560.0 - 1345.264)
    point = by_feature["clur5tlyr1n2f07dcf78sa4y5"]
    assert point["keypoints"] == [1166.606, 1441.768, 2] and point["num_keypoints"] == 1

    for i, res in enumerate(results[:4]):
        ann = by_feature[res.feature_id]
        assert ann["bbox"] == [res.x, res.y, res.w, res.h]
        assert ann["area"] == res.area
        decoded = coco.annToMask(ann)
        assert np.array_equal(decoded, _instance_mask(i))
        assert np.array_equal(mask_utils.decode(ann["segmentation"]), _instance_mask(i))


def test_shoelace_area() -> None:
    square = [(0.0, 0.0), (4.0, 0.0), (4.0, 3.0), (0.0, 3.0)]
    assert shoelace_area(square) == 12.0
    assert shoelace_area([*square, (0.0, 0.0)]) == 12.0  # closing point changes nothing
    assert shoelace_area(list(reversed(square))) == 12.0


def test_category_ids_are_stable_across_versions(tmp_path: Path) -> None:
    row = _parse(seed.sample_project_export())
    previous = {"csomeretiredschema00000000": {"id": 3, "name": "retired_class"}}
    summary = write_coco(
        tmp_path / "v2.json", row.tables["data_rows"], row.tables["annotations"], previous
    )
    assert previous == {"csomeretiredschema00000000": {"id": 3, "name": "retired_class"}}
    cmap = summary.category_map
    assert cmap["csomeretiredschema00000000"]["id"] == 3
    coco = COCO(str(tmp_path / "v2.json"))
    assert {c["feature_schema_id"]: c["id"] for c in coco.cats.values()} == {
        k: v["id"] for k, v in cmap.items()
    }  # retired class kept
    # The next version, given this map, changes no id.
    again = write_coco(
        tmp_path / "v3.json", row.tables["data_rows"], row.tables["annotations"], cmap
    )
    assert again.category_map == cmap


def test_model_run_ground_truth_and_results_load_in_pycocotools(tmp_path: Path) -> None:
    export = seed.sample_model_run_export()
    run = export["experiments"]["a2fb1fec-83fb-0858-2cfb-98f4757eae95"]["runs"]
    preds = run["a2fb1fec-b8a5-0f96-b61e-0d5643fb8dec"]["predictions"][0]["annotations"]
    preds["objects"][0]["confidence"] = 0.25
    row = _parse(export)
    anns = apply_mask_results(
        row.tables["annotations"], _mask_results(row, ("label", "prediction"))
    )
    res_bbox = write_coco_results(tmp_path / "bbox.json", anns, iou_type="bbox")
    res_segm = write_coco_results(
        tmp_path / "segm.json", anns, res_bbox.category_map, iou_type="segm"
    )
    gt = write_coco(tmp_path / "gt.json", row.tables["data_rows"], anns, res_segm.category_map)
    # Ground truth: label rows only (2 boxes, polygon, point, 2 masks; polyline skipped).
    assert gt.annotations == 6
    coco = COCO(str(tmp_path / "gt.json"))
    dets = coco.loadRes(str(tmp_path / "bbox.json"))
    # Predictions: 2 boxes, polygon, mask (point and polyline are not detections).
    assert len(dets.anns) == res_bbox.annotations == 4
    scores = {a["feature_id"]: a["score"] for a in dets.anns.values()}
    assert scores[preds["objects"][0]["feature_id"]] == 0.25
    assert sorted(scores.values()) == [0.25, 1.0, 1.0, 1.0]
    assert {a["image_id"] for a in dets.anns.values()} == set(coco.getImgIds())
    segm = coco.loadRes(str(tmp_path / "segm.json"))
    # The prediction's mask and its polygon (rasterised to RLE); no box, point or line.
    assert len(segm.anns) == 2
    (mask_det,) = [a for a in segm.anns.values() if a["area"] == int(_instance_mask(2).sum())]
    # The prediction's mask is the third mask of the row (after the two label masks).
    assert mask_det["area"] == int(_instance_mask(2).sum())
    assert np.array_equal(segm.annToMask(mask_det), _instance_mask(2))
    cats = {c["name"] for c in coco.cats.values()}
    assert {"bounding_box", "polygon", "mask"} <= cats


def test_results_reject_unknown_iou_type(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="iou_type"):
        write_coco_results(tmp_path / "x.json", [], iou_type="keypoints")


def test_coco_streams_from_parquet_tables_and_is_reproducible(tmp_path: Path) -> None:
    from labelhaul.tables import TableSink, iter_parquet_records

    rows = []
    for i in range(3):
        export = seed.sample_project_export()
        export["data_row"]["id"] = f"dr{i}"
        export["data_row"]["global_key"] = None
        rows.append(_parse(export))
    with TableSink(tmp_path / "tables", row_group_size=5) as sink:
        for row in rows:
            sink.add("data_rows", row.tables["data_rows"])
            sink.add(
                "annotations", apply_mask_results(row.tables["annotations"], _mask_results(row))
            )
    paths = sink.close()

    def write(name: str) -> bytes:
        write_coco(
            tmp_path / name,
            iter_parquet_records(paths["data_rows"], batch_size=2),
            iter_parquet_records(paths["annotations"], batch_size=7),
            {"csomeschema": {"id": 1, "name": "polygon"}},
            info={"version": "v000001"},
        )
        return (tmp_path / name).read_bytes()

    first = write("a.json")
    assert write("b.json") == first  # content-named files need stable bytes
    coco = COCO(str(tmp_path / "a.json"))
    assert len(coco.imgs) == 3 and len(coco.anns) == 3 * 11
    # No global key: the file name falls back to the row data's basename, made unique.
    names = sorted(img["file_name"] for img in coco.imgs.values())
    assert len(set(names)) == 3
    assert "2560px-Kitano_Street_Kobe01s5s4110.jpeg" in names
    assert all(n.startswith("2560px-Kitano_Street_Kobe01s5s4110") for n in names)
    assert coco.dataset["info"] == {"version": "v000001"}
    for img_id in coco.getImgIds():
        assert len(coco.getAnnIds(imgIds=[img_id])) == 11
