"""Shapes #16 guessed, checked against what Labelbox's docs and the SDK's own tests show.

- Multimodal chat tools: labelbox-python's export test (`tests/integration/conftest.py`,
  `expected_exports_v2_mmc`) exports `selected_message`, `selected_messages{messages[]}` and
  `ranked_messages{ranked_messages[]}`; #16 had read the SDK's import shape
  (`message_evaluation_task.data`), which is still read.
- Frame-based kinds: only `VideoBoundingBox` and `DICOMPolyline` are shown by a source;
  any `Video<X>` / `DICOM<X>` twin of an image kind lands as that kind's geometry.
- Audio: the export test shows `"timestamp": {}` (an object), so the emulator nests its
  temporal classifications as `timestamp.classifications[]`; the list form still parses.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from labelhaul.emulator.synthetic import SyntheticSpec, build_row
from labelhaul.parse_video import frame_twin
from labelhaul.rows import ParsedRow, parse_export_line
from tests import media_samples as media

PARENT, CHILD_A, CHILD_B = "cparent", "cchild-a", "cchild-b"


def _parse(export: dict[str, Any], source_id: str | None = media.PROJECT_ID) -> ParsedRow:
    parsed = parse_export_line(orjson.dumps(export), 0, source_id=source_id)
    assert isinstance(parsed, ParsedRow)
    return parsed


def _documented_mmc_objects() -> list[dict[str, Any]]:
    """The tools as labelbox-python's `expected_exports_v2_mmc` has them (ids filled in)."""
    kids = [{"message_id": CHILD_A, "model_config_name": "m-a"},
            {"message_id": CHILD_B, "model_config_name": "m-b"}]  # fmt: skip
    return [
        {
            "feature_id": "cfeat-single",
            "name": "message-single-selection",
            "annotation_kind": "MessageSingleSelection",
            "classifications": [],
            "selected_message": {**kids[0], "parent_message_id": PARENT},
        },
        {
            "feature_id": "cfeat-multi",
            "name": "message-multi-selection",
            "annotation_kind": "MessageMultiSelection",
            "classifications": [],
            "selected_messages": {"messages": kids, "parent_message_id": PARENT},
        },
        {
            "feature_id": "cfeat-rank",
            "name": "message-ranking",
            "annotation_kind": "MessageRanking",
            "classifications": [],
            "ranked_messages": {
                "ranked_messages": [{**k, "order": i} for i, k in enumerate(kids, start=1)],
                "parent_message_id": PARENT,
            },
        },
    ]


def _import_shape(obj: dict[str, Any]) -> dict[str, Any]:
    """The same tool in the SDK's import shape (MessageEvaluationTaskAnnotation)."""
    out = {k: v for k, v in obj.items() if k not in ("selected_message", "selected_messages",
                                                       "ranked_messages")}  # fmt: skip
    if "selected_message" in obj:
        data = dict(obj["selected_message"])
    elif "selected_messages" in obj:
        held = obj["selected_messages"]
        data = {"parent_message_id": held["parent_message_id"],
                "selected_messages": held["messages"]}  # fmt: skip
    else:
        data = dict(obj["ranked_messages"])
    out["message_evaluation_task"] = {"format": "x", "data": data}
    return out


def _tool_rows(parsed: ParsedRow) -> list[tuple[Any, ...]]:
    return sorted(
        (
            a["annotation_kind"],
            a["message_id"],
            a["model_config_name"],
            a["parent_message_id"],
            a["rank"],
            a["valid"],
        )  # fmt: skip
        for a in parsed.tables["annotations"]
    )


def test_the_sdk_export_tests_mmc_tools_land_as_rows_per_message() -> None:
    """Before: each documented tool was `missing_messages` (no message_evaluation_task)."""
    parsed = _parse(media.wrap({"objects": _documented_mmc_objects()}, "mmc"))
    assert parsed.errors == []
    assert _tool_rows(parsed) == sorted(
        [
            ("MessageSingleSelection", CHILD_A, "m-a", PARENT, None, True),
            ("MessageMultiSelection", CHILD_A, "m-a", PARENT, None, True),
            ("MessageMultiSelection", CHILD_B, "m-b", PARENT, None, True),
            ("MessageRanking", CHILD_A, "m-a", PARENT, 1, True),
            ("MessageRanking", CHILD_B, "m-b", PARENT, 2, True),
        ]
    )


def test_the_sdk_import_shape_of_mmc_tools_lands_the_same() -> None:
    documented = _parse(media.wrap({"objects": _documented_mmc_objects()}, "mmc"))
    legacy = [_import_shape(o) for o in _documented_mmc_objects()]
    parsed = _parse(media.wrap({"objects": legacy}, "mmc"))
    assert parsed.errors == []
    assert _tool_rows(parsed) == _tool_rows(documented)


def test_the_emulator_exports_mmc_tools_in_the_documented_shape() -> None:
    spec = SyntheticSpec.make(n_rows=1, instances=1, seed=4, width=16, height=16, media=["mmc"])
    row = build_row(spec, 0)
    objects = row["projects"][spec.project_id]["labels"][0]["annotations"]["objects"]
    keys = {o["annotation_kind"]: set(o) - {"feature_id", "feature_schema_id", "name", "value",
                                             "annotation_kind", "classifications"}
            for o in objects}  # fmt: skip
    assert keys == {
        "MessageSingleSelection": {"selected_message"},
        "MessageMultiSelection": {"selected_messages"},
        "MessageRanking": {"ranked_messages"},
    }
    assert _parse(row, spec.project_id).errors == []


@pytest.mark.parametrize(
    ("kind", "twin"),
    [
        ("VideoBoundingBox", "ImageBoundingBox"),
        ("VideoPoint", "ImagePoint"),
        ("DICOMPoint", "ImagePoint"),
        ("DICOMBoundingBox", "ImageBoundingBox"),
        ("DICOMPolygon", "ImagePolygon"),
        ("VideoCuboid", None),
        ("Video", None),
        (None, None),
    ],
)
def test_frame_kinds_read_as_their_image_twin(kind: str | None, twin: str | None) -> None:
    assert frame_twin(kind) == twin


def test_a_dicom_point_and_box_land_per_frame() -> None:
    """Before: `DICOMPoint` / `DICOMBoundingBox` were unknown kinds (only DICOMPolyline and
    DICOMSegmentationMask were listed), kept raw and counted as not landed."""
    dicom = media.dicom_row()
    annotations = dicom["projects"][media.PROJECT_ID]["labels"][0]["annotations"]
    frame = next(iter(annotations["groups"]["Axial"]["frames"].values()))
    frame["objects"]["cpt"] = {
        "feature_id": "cpt", "name": "p", "annotation_kind": "DICOMPoint",
        "classifications": [], "point": {"x": 3.0, "y": 4.0},
    }  # fmt: skip
    frame["objects"]["cbx"] = {
        "feature_id": "cbx", "name": "b", "annotation_kind": "DICOMBoundingBox",
        "classifications": [], "bounding_box": {"top": 1.0, "left": 2.0, "height": 3.0,
                                                 "width": 4.0},
    }  # fmt: skip
    parsed = _parse(dicom)
    new = {a["feature_id"]: a for a in parsed.tables["annotations"] if a["feature_id"] in
           ("cpt", "cbx")}  # fmt: skip
    assert [e.kind for e in parsed.errors if e.feature_id in ("cpt", "cbx")] == []
    assert (new["cpt"]["annotation_kind"], new["cpt"]["point_x"], new["cpt"]["plane"]) == (
        "DICOMPoint", 3.0, "Axial"
    )  # fmt: skip
    assert (new["cbx"]["bbox_width"], new["cbx"]["valid"]) == (4.0, True)


def test_audio_timestamp_is_an_object_in_the_emulator_and_both_forms_parse() -> None:
    spec = SyntheticSpec.make(n_rows=1, instances=1, seed=4, width=16, height=16, media=["audio"])
    row = build_row(spec, 0)
    annotations = row["projects"][spec.project_id]["labels"][0]["annotations"]
    assert isinstance(annotations["timestamp"], dict)
    as_object = _parse(row, spec.project_id)
    assert as_object.errors == []
    listed = copy.deepcopy(row)
    label = listed["projects"][spec.project_id]["labels"][0]
    label["annotations"]["timestamp"] = label["annotations"]["timestamp"]["classifications"]
    as_list = _parse(listed, spec.project_id)
    assert as_list.errors == []

    def spans(p: ParsedRow) -> list[tuple[Any, ...]]:
        return sorted(
            (c["question_name"], c["answer_name"], c["time_start_ms"], c["time_end_ms"])
            for c in p.tables["classifications"]
            if c["time_start_ms"] is not None
        )

    assert spans(as_object) == spans(as_list) and len(spans(as_object)) >= 3
