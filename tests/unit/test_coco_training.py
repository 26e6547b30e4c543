"""COCO a training script can use: file names, unsigned URLs, schema-keyed category ids,
one label per data row, and COCOeval (pycocotools and faster-coco-eval) on mixed kinds."""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any

import orjson
import pytest
from pycocotools import mask as mask_utils

from labelhaul import seed
from labelhaul.coco import polygon_rle, unsigned_url, write_coco, write_coco_results
from labelhaul.labelpolicy import LabelPolicy, parse_label_policy, select_labels
from labelhaul.rows import ParsedRow, parse_export_line
from tests.unit.test_coco import _mask_results, _parse

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

SIGNED = (
    "https://storage.labelbox.com/ck7u0000org%2Fc9150000-PI588568_13-107_0_32.png"
    "?Expires=1700000000&KeyName=labelbox-assets-key-3&Signature=abcDEF_-="
)


def _image(**fields: Any) -> dict[str, Any]:
    return {"data_row_id": fields.pop("data_row_id", "dr1"), "width": 4, "height": 4, **fields}


def _write_images(tmp_path: Path, images: list[dict[str, Any]]) -> list[dict[str, Any]]:
    write_coco(tmp_path / "i.json", images, [])
    result: list[dict[str, Any]] = orjson.loads((tmp_path / "i.json").read_bytes())["images"]
    return result


def test_file_name_prefers_global_key_then_external_id_then_decoded_row_data(
    tmp_path: Path,
) -> None:
    images = _write_images(
        tmp_path,
        [
            _image(data_row_id="a", global_key="scans/a.png", external_id="x.png", row_data=SIGNED),
            _image(data_row_id="b", external_id="b-ext.jpg", row_data=SIGNED),
            _image(data_row_id="c", row_data=SIGNED),
            _image(data_row_id="d"),
        ],
    )
    assert [(i["file_name"], i["file_name_source"]) for i in images] == [
        ("scans/a.png", "global_key"),
        ("b-ext.jpg", "external_id"),
        ("c9150000-PI588568_13-107_0_32.png", "row_data"),
        ("d", "data_row_id"),
    ]
    assert all("?" not in i["file_name"] and "%" not in i["file_name"] for i in images)


def test_colliding_file_names_get_a_recorded_deterministic_suffix(tmp_path: Path) -> None:
    # A redacted export: every row_data has the same last segment.
    rows = [_image(data_row_id=f"dr{i}", row_data=SIGNED) for i in range(7)]
    first = _write_images(tmp_path, rows)
    names = [i["file_name"] for i in first]
    assert len(set(names)) == 7
    assert names[0] == "c9150000-PI588568_13-107_0_32.png"
    for img in first[1:]:
        assert img["file_name_collision"] == "c9150000-PI588568_13-107_0_32.png"
        assert img["file_name"].endswith(".png") and "~" in img["file_name"]
    assert "file_name_collision" not in first[0]
    assert _write_images(tmp_path, rows) == first  # deterministic
    summary = write_coco(tmp_path / "s.json", rows, [])
    assert summary.file_name_collisions == 6


def test_coco_url_is_never_signed() -> None:
    assert unsigned_url(SIGNED) == SIGNED.split("?")[0]
    s3 = (
        "https://bucket.s3.amazonaws.com/a/b.png?versionId=3&X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=AK%2F2024&X-Amz-Date=20240101T000000Z&X-Amz-Expires=3600"
        "&X-Amz-SignedHeaders=host&X-Amz-Signature=ff00"
    )
    assert unsigned_url(s3) == "https://bucket.s3.amazonaws.com/a/b.png?versionId=3"
    gcs = "https://storage.googleapis.com/b/c.jpg?X-Goog-Algorithm=GOOG4&X-Goog-Signature=ab"
    assert unsigned_url(gcs) == "https://storage.googleapis.com/b/c.jpg"
    plain = "https://example.com/c.jpg"
    assert unsigned_url(plain) == plain


def test_coco_url_in_the_file_is_unsigned(tmp_path: Path) -> None:
    (img,) = _write_images(tmp_path, [_image(row_data=SIGNED)])
    assert img["coco_url"] == SIGNED.split("?")[0]


def _ids_by_schema(path: Path) -> dict[str, int]:
    cats = orjson.loads(path.read_bytes())["categories"]
    return {c["feature_schema_id"]: c["id"] for c in cats}


def test_category_ids_follow_the_feature_schema_across_renames_and_datasets(
    tmp_path: Path,
) -> None:
    project = _parse(seed.sample_project_export())
    write_coco(tmp_path / "p.json", project.tables["data_rows"], project.tables["annotations"])
    ids = _ids_by_schema(tmp_path / "p.json")
    # The same classes seen in another order (a model run lists them differently), with no
    # map shared between the two datasets, get the same ids.
    write_coco(
        tmp_path / "r.json",
        project.tables["data_rows"],
        list(reversed(project.tables["annotations"])),
    )
    assert _ids_by_schema(tmp_path / "r.json") == ids
    # A renamed class keeps its id; the category carries the new name.
    renamed = [
        dict(a, name="polygon_renamed") if a["name"] == "polygon" else a
        for a in project.tables["annotations"]
    ]
    poly_schema = next(a["feature_schema_id"] for a in renamed if a["name"] == "polygon_renamed")
    write_coco(tmp_path / "n.json", project.tables["data_rows"], renamed)
    assert _ids_by_schema(tmp_path / "n.json") == ids
    cats = orjson.loads((tmp_path / "n.json").read_bytes())["categories"]
    assert {c["name"] for c in cats if c["feature_schema_id"] == poly_schema} == {"polygon_renamed"}


def test_project_and_model_run_give_a_shared_class_the_same_id(tmp_path: Path) -> None:
    project = _parse(seed.sample_project_export())
    # A model run of this project: its objects carry the project's feature schema ids (the
    # seed's sample model run comes from another ontology; give it this one's ids by name).
    schema_by_name = {a["name"]: a["feature_schema_id"] for a in project.tables["annotations"]}
    export = seed.sample_model_run_export()
    for run in next(iter(export["experiments"].values()))["runs"].values():
        for key in ("labels", "predictions"):
            for label in run[key]:
                for obj in label["annotations"]["objects"]:
                    obj["feature_schema_id"] = schema_by_name[obj["name"]]
    run_row = _parse(export)
    write_coco(tmp_path / "p.json", project.tables["data_rows"], project.tables["annotations"])
    res = write_coco_results(tmp_path / "res.json", run_row.tables["annotations"])
    write_coco(
        tmp_path / "m.json",
        run_row.tables["data_rows"],
        run_row.tables["annotations"],
        res.category_map,
    )

    def by_name(path: Path) -> dict[str, int]:
        return {c["name"]: c["id"] for c in orjson.loads(path.read_bytes())["categories"]}

    p, m = by_name(tmp_path / "p.json"), by_name(tmp_path / "m.json")
    assert {"polygon", "bounding_box", "point"} <= p.keys() & m.keys()
    assert {k: p[k] for k in m} == m


def test_polygon_rle_is_byte_identical_to_pycocotools() -> None:
    rng = random.Random(7)
    for _ in range(500):
        h, w = rng.randint(1, 50), rng.randint(1, 70)
        flat: list[float] = []
        for _ in range(rng.randint(3, 8)):
            flat += [round(rng.uniform(-4, w + 4), 3), round(rng.uniform(-4, h + 4), 3)]
        if rng.random() < 0.3:
            flat += flat[:2]  # Labelbox closes polygons by repeating the first point
        expected = mask_utils.frPyObjects([flat], h, w)[0]["counts"].decode()
        assert polygon_rle(flat, h, w) == expected


def _model_run_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    from labelhaul.tables import apply_mask_results

    row = _parse(seed.sample_model_run_export())
    anns = apply_mask_results(
        row.tables["annotations"], _mask_results(row, ("label", "prediction"))
    )
    bbox = write_coco_results(tmp_path / "bbox.json", anns, iou_type="bbox")
    segm = write_coco_results(tmp_path / "segm.json", anns, bbox.category_map, iou_type="segm")
    write_coco(tmp_path / "gt.json", row.tables["data_rows"], anns, segm.category_map)
    return tmp_path / "gt.json", tmp_path / "bbox.json", tmp_path / "segm.json"


@pytest.mark.parametrize("library", ["pycocotools", "faster_coco_eval"])
@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_cocoeval_runs_on_mixed_ground_truth(tmp_path: Path, library: str, iou_type: str) -> None:
    # Ground truth with boxes, a polygon, a point and masks; results of both iou types.
    gt_path, bbox_path, segm_path = _model_run_files(tmp_path)
    gt_anns = orjson.loads(gt_path.read_bytes())["annotations"]
    assert {"bbox", "segmentation"} <= set().union(*(a.keys() for a in gt_anns))
    stats = evaluate(library, gt_path, bbox_path if iou_type == "bbox" else segm_path, iou_type)
    assert len(stats) == 12
    assert max(stats) > 0  # predictions that coincide with ground truth score


def evaluate(library: str, gt_path: Path, res_path: Path, iou_type: str) -> list[float]:
    """Run COCOeval the way a training script does; return its 12 summary stats."""
    import contextlib
    import io

    if library == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    else:
        from faster_coco_eval import COCO
        from faster_coco_eval import COCOeval_faster as COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        dt = gt.loadRes(str(res_path))
        ev = COCOeval(gt, dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(v) for v in ev.stats[:12]]


def _label(label_id: str, created: str, **perf: Any) -> dict[str, Any]:
    base = seed.sample_project_export()
    label = copy.deepcopy(next(iter(base["projects"].values()))["labels"][0])
    label["id"] = label_id
    label["label_details"]["created_at"] = created
    label["performance_details"].update(perf)
    for obj in label["annotations"]["objects"]:
        obj["feature_id"] = f"{label_id}-{obj['feature_id']}"
    label["annotations"]["relationships"] = []
    return label


def _consensus_row(labels: list[dict[str, Any]]) -> ParsedRow:
    export = seed.sample_project_export()
    next(iter(export["projects"].values()))["labels"] = labels
    export["media_attributes"].update(width=64, height=48)
    row = parse_export_line(orjson.dumps(export), 0)
    assert isinstance(row, ParsedRow)
    return row


def test_label_policy_chooses_one_label_per_row() -> None:
    labels = [
        _label("lbA", "2024-01-01T00:00:00.000+00:00", consensus_score=0.9),
        _label("lbB", "2024-01-03T00:00:00.000+00:00", consensus_score=0.4),
        _label("lbC", "2024-01-02T00:00:00.000+00:00", benchmark_reference_label="lbC"),
    ]
    row = _consensus_row(labels)
    recs = row.tables["labels"]
    assert {r["label_id"] for r in recs} == {"lbA", "lbB", "lbC"}  # the table keeps all
    drid = row.data_row_id
    assert select_labels("benchmark", recs) == {drid: "lbC"}
    assert select_labels("consensus", recs) == {drid: "lbA"}
    assert select_labels("latest", recs) == {drid: "lbB"}
    assert select_labels("all", recs) == {}
    no_bench = [r for r in recs if r["label_id"] != "lbC"]
    assert select_labels("benchmark", no_bench) == {drid: "lbA"}  # else highest consensus
    no_scores = [dict(r, consensus_score=None) for r in no_bench]
    assert select_labels("benchmark", no_scores) == {drid: "lbB"}  # else latest
    assert select_labels("latest", recs[:1]) == {}  # one label: nothing to choose
    assert parse_label_policy(None) is LabelPolicy.benchmark
    with pytest.raises(ValueError, match="LABELHAUL_LABEL_POLICY.*benchmark, consensus"):
        parse_label_policy("best")


def test_coco_writes_one_labels_objects_per_image(tmp_path: Path) -> None:
    labels = [
        _label("lbA", "2024-01-01T00:00:00.000+00:00", consensus_score=0.9),
        _label("lbB", "2024-01-03T00:00:00.000+00:00", consensus_score=0.4),
    ]
    row = _consensus_row(labels)
    anns = row.tables["annotations"]
    per_label = sum(1 for a in anns if a["label_id"] == "lbA")
    chosen = select_labels("consensus", row.tables["labels"])
    summary = write_coco(tmp_path / "c.json", row.tables["data_rows"], anns, selected_labels=chosen)
    coco = orjson.loads((tmp_path / "c.json").read_bytes())
    assert {a["label_id"] for a in coco["annotations"]} == {"lbA"}
    assert summary.labels_not_selected == per_label
    everything = write_coco(tmp_path / "all.json", row.tables["data_rows"], anns)
    assert {
        a["label_id"] for a in orjson.loads((tmp_path / "all.json").read_bytes())["annotations"]
    } == {"lbA", "lbB"}
    assert everything.labels_not_selected == 0


def test_label_policy_setting_and_flow_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    from labelhaul.config import load_settings
    from labelhaul.flows.sync_model_run import sync_model_run
    from labelhaul.flows.sync_project import sync_project
    from prefect.utilities.callables import parameter_schema

    assert load_settings().label_policy is LabelPolicy.benchmark
    monkeypatch.setenv("LABELHAUL_LABEL_POLICY", "Latest")
    assert load_settings().label_policy is LabelPolicy.latest
    monkeypatch.setenv("LABELHAUL_LABEL_POLICY", "best")
    with pytest.raises(ValueError, match="set LABELHAUL_LABEL_POLICY .* to one of benchmark"):
        load_settings()
    for flow in (sync_project, sync_model_run):
        schema = parameter_schema(flow.fn).model_dump()
        prop = schema["properties"]["label_policy"]
        assert prop.get("description")
        ref = next(o["$ref"] for o in prop["anyOf"] if "$ref" in o)
        choices = schema["definitions"][ref.rsplit("/", 1)[-1]]["enum"]
        assert choices == ["benchmark", "consensus", "latest", "all"]


# sha256 of the COCO file that the release before schema-keyed categories (3f958c9) wrote for
# the input below: delta versions it landed record that digest, and the reader must rebuild
# exactly those bytes.
LEGACY_SHA256 = "e0bf9a4f27e8067fe65a25a5c415dacd4f18cab37805371470110693efc598e2"


def test_legacy_writer_rebuilds_the_bytes_of_the_earlier_release(tmp_path: Path) -> None:
    import hashlib

    from labelhaul.coco import write_coco_legacy
    from labelhaul.tables import apply_mask_results

    images, anns = [], []
    for i in range(3):
        export = seed.sample_project_export()
        export["data_row"]["id"] = f"dr{i}"
        if i:
            export["data_row"]["global_key"] = None
        row = _parse(export)
        images += row.tables["data_rows"]
        anns += apply_mask_results(row.tables["annotations"], _mask_results(row))
    write_coco_legacy(
        tmp_path / "c.json", images, anns, {"polygon": 1}, info={"version": "v000001"}
    )
    assert hashlib.sha256((tmp_path / "c.json").read_bytes()).hexdigest() == LEGACY_SHA256
