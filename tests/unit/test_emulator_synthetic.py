"""Synthetic projects: every annotation kind, deterministic rows, ground-truth masks."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from labelhaul.emulator import imaging
from labelhaul.emulator.synthetic import (
    SyntheticSource,
    SyntheticSpec,
    build_row,
    ground_truth_masks,
)


def _spec(**kw: Any) -> SyntheticSpec:
    args: dict[str, Any] = {"n_rows": 20, "instances": 5, "seed": 3, "width": 160, "height": 120}
    args.update(kw)
    return SyntheticSpec.make(**args)


def test_rows_are_deterministic_and_differ_by_seed() -> None:
    a, b = _spec(), _spec()
    assert json.dumps(build_row(a, 7)) == json.dumps(build_row(b, 7))
    assert json.dumps(build_row(a, 7)) != json.dumps(build_row(_spec(seed=4), 7))
    assert a.project_id != _spec(number=2).project_id


def test_a_row_has_every_annotation_kind_of_the_seed() -> None:
    spec = _spec()
    row = build_row(spec, 2)
    proj = row["projects"][spec.project_id]
    label = proj["labels"][0]
    ann = label["annotations"]
    kinds = {o["annotation_kind"] for o in ann["objects"]}
    assert kinds == {
        "ImageBoundingBox",
        "ImagePolygon",
        "ImagePolyline",
        "ImagePoint",
        "ImageSegmentationMask",
    }
    masks = [o for o in ann["objects"] if o["annotation_kind"] == "ImageSegmentationMask"]
    assert len(masks) == spec.instances
    assert all("/masks/" + spec.composite_id(2) + "/" in m["composite_mask"]["url"] for m in masks)
    assert masks[0]["classifications"][0]["text_answer"]["content"]
    assert any(
        o["classifications"] and "radio_answer" in o["classifications"][0] for o in ann["objects"]
    )
    names = {c["name"] for c in ann["classifications"]}
    assert {
        "radio_question",
        "checklist_question",
        "free_text",
        "nested_radio_question",
        "nested_checklist_question",
    } <= names
    nested_radio = next(c for c in ann["classifications"] if c["name"] == "nested_radio_question")
    assert nested_radio["radio_answer"]["classifications"][0]["radio_answer"]
    rel = ann["relationships"][0]["unidirectional_relationship"]
    ids = {o["feature_id"] for o in ann["objects"]}
    assert rel["source"] in ids and rel["target"] in ids
    assert row["attachments"] and row["metadata_fields"] and row["embeddings"]
    assert len(row["embeddings"][0]["values"][0]["value"]) == 4
    assert {"label_details", "performance_details"} <= set(label)
    details = proj["project_details"]
    assert details["workflow_status"] == spec.workflow_status(2)
    assert details["batch_id"] == spec.batch_id(2)
    assert details["workflow_history"]
    assert row["data_row"]["details"]["last_activity_at"].startswith("2024-01-01T02:30:00")
    assert label["label_details"]["created_at"].startswith("2024-01-01T02:00:00")


def test_composite_colours_match_the_export_and_ground_truth() -> None:
    spec = _spec()
    src = SyntheticSource(spec)
    row = build_row(spec, 4)
    png = src.composite_png(spec.composite_id(4))
    assert png is not None
    rgb = imaging.decode_rgb_png(png)
    assert rgb.shape == (spec.height, spec.width, 3)
    truth = ground_truth_masks(spec, 4)
    masks = [
        o
        for o in row["projects"][spec.project_id]["labels"][0]["annotations"]["objects"]
        if o["annotation_kind"] == "ImageSegmentationMask"
    ]
    union = np.zeros((spec.height, spec.width), dtype=bool)
    for obj in masks:
        cut = imaging.cut_instance(rgb, tuple(obj["composite_mask"]["color_rgb"]))
        assert cut.any()
        assert np.array_equal(cut, truth[obj["feature_id"]])
        inst = src.instance_mask(obj["feature_id"])
        assert inst is not None and np.array_equal(inst, cut)
        assert not (union & cut).any()  # instances never overlap
        union |= cut
    assert (rgb[~union] == 0).all()  # everything else is background


def test_unknown_ids_find_nothing() -> None:
    spec = _spec()
    src = SyntheticSource(spec)
    assert src.composite_png("nope") is None
    assert src.composite_png(spec.composite_id(spec.n_rows)) is None  # past the last row
    assert src.instance_mask(spec.mask_feature_id(0, spec.instances)) is None
    assert src.composite_png(_spec(number=9).composite_id(0)) is None  # another project


def test_large_projects_cost_nothing_until_read() -> None:
    spec = _spec(n_rows=50_000, instances=8, width=320, height=240)
    src = SyntheticSource(spec)
    assert src.count() == 50_000
    last = src.row(49_999)
    assert last["data_row"]["id"] == spec.data_row_id(49_999)
