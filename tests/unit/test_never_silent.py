"""Nothing in an export is dropped in silence: unknown keys, kinds and answer shapes are errors.

Before #16 a video label's `annotations.frames` (and a DICOM label's `groups`) landed as a
labels row with 0 annotations and 0 error records; message-scoped conversational answers gave
a misleading "has no radio/checklist/text answer" warning and no row. Now video and DICOM
frames are rows (labelhaul.parse_video); what no parser knows is an error record.
"""

from __future__ import annotations

from typing import Any

import orjson

from labelhaul.emulator.synthetic import SyntheticSpec, build_row
from labelhaul.records import UNPARSED_KINDS
from labelhaul.rows import ParsedRow, parse_export_line
from labelhaul.sync.report import summary_markdown
from tests import media_samples as media
from tests.conformance import walk
from tests.helpers import make_manifest

LABEL_PATH = f"projects.{media.PROJECT_ID}.labels[0]"


def _parse(export: dict[str, Any]) -> ParsedRow:
    parsed = parse_export_line(orjson.dumps(export), 0, source_id=media.PROJECT_ID)
    assert isinstance(parsed, ParsedRow)
    return parsed


def _by_path(parsed: ParsedRow) -> dict[str, Any]:
    return {e.extra.get("path"): e for e in parsed.errors}


def _annotations(export: dict[str, Any]) -> dict[str, Any]:
    annotations: dict[str, Any] = export["projects"][media.PROJECT_ID]["labels"][0]["annotations"]
    return annotations


def test_the_issues_video_and_dicom_examples_land_as_rows_with_no_errors() -> None:
    video = media.video_row()
    parsed = _parse(video)
    assert parsed.errors == []
    boxes = [r for r in parsed.tables["annotations"] if r["feature_id"] == media.BOX_ID]
    assert sorted((r["frame"], r["keyframe"]) for r in boxes) == [(1, True), (5, True), (9, True)]
    report = walk(video, parsed)
    assert report.unlanded == [] and report.kept_raw == 0 and report.by_rule > 30
    dicom = media.dicom_row()
    parsed = _parse(dicom)
    assert parsed.errors == []
    [line] = [r for r in parsed.tables["annotations"] if r["feature_id"] == media.LINE_ID]
    assert (line["annotation_kind"], line["plane"], line["frame"]) == ("DICOMPolyline", "Axial", 3)
    report = walk(dicom, parsed)
    assert report.unlanded == [] and report.kept_raw == 0


def test_a_made_up_annotations_key_is_an_error_record_with_its_path_and_raw_json() -> None:
    export = media.video_row()
    clouds = {media.BOX_ID: [{"x": 1.5, "y": 2.5, "z": 3.5}]}
    _annotations(export)["point_clouds"] = clouds
    parsed = _parse(export)
    [err] = parsed.errors
    assert err.kind == "unknown_annotation_key" and err.stage == "parse"
    assert err.extra["path"] == f"{LABEL_PATH}.annotations.point_clouds"
    assert err.data_row_id == export["data_row"]["id"]
    assert err.label_id == export["projects"][media.PROJECT_ID]["labels"][0]["id"]
    assert orjson.loads(err.extra["raw"]) == clouds
    assert walk(export, parsed).unlanded == []
    parsed.errors.clear()  # without the error record the cloud's leaves land nowhere
    assert len(walk(export, parsed).unlanded) == 3


def test_an_unknown_kind_and_an_unknown_key_inside_a_frame_are_error_records() -> None:
    export = media.video_row()
    frame = _annotations(export)["frames"]["5"]
    cuboid = {"feature_id": "ccuboid", "name": "c", "annotation_kind": "VideoCuboid", "dims": [2]}
    frame["objects"]["ccuboid"] = cuboid
    frame["hotspots"] = [{"x": 7}]
    parsed = _parse(export)
    errors = _by_path(parsed)
    at = f"{LABEL_PATH}.annotations.frames.5"
    kind = errors[f"{at}.objects.ccuboid"]
    assert (kind.kind, kind.feature_id, kind.extra["frame"]) == (
        "unknown_annotation_kind",
        "ccuboid",
        5,
    )
    [row] = [r for r in parsed.tables["annotations"] if r["feature_id"] == "ccuboid"]
    assert row["valid"] is False and orjson.loads(row["raw_json"]) == cuboid
    key = errors[f"{at}.hotspots"]
    assert key.kind == "unknown_annotation_key" and orjson.loads(key.extra["raw"]) == [{"x": 7}]
    # The walker finds the frame's errors at their JSON paths in the export line.
    assert walk(export, parsed).unlanded == []


def test_unknown_annotation_kind_error_carries_its_json_path() -> None:
    obj = {"feature_id": "cfeat1", "name": "x", "annotation_kind": "FancyShape", "blob": {"a": 1}}
    parsed = _parse(media.wrap({"objects": [{"feature_id": "cfeat0", "name": "y"}, obj]}, "image"))
    fancy = next(e for e in parsed.errors if e.feature_id == "cfeat1")
    assert fancy.kind == "unknown_annotation_kind"
    assert fancy.extra["path"] == f"{LABEL_PATH}.annotations.objects[1]"
    row = next(r for r in parsed.tables["annotations"] if r["feature_id"] == "cfeat1")
    assert orjson.loads(row["raw_json"]) == obj


def test_unknown_answer_shape_lands_raw_in_classifications_and_is_an_error() -> None:
    likert = {
        "feature_id": "cq1",
        "feature_schema_id": "cqs1",
        "name": "agreement",
        "likert_answer": {"score": 4, "scale": 5},
    }
    parsed = _parse(media.wrap({"classifications": [likert]}, "image"))
    [err] = parsed.errors
    assert err.kind == "unknown_answer_shape"
    assert err.severity == "error"
    assert err.feature_id == "cq1"
    assert err.extra["path"] == f"{LABEL_PATH}.annotations.classifications[0]"
    [row] = parsed.tables["classifications"]
    assert row["question_feature_id"] == "cq1" and row["question_name"] == "agreement"
    assert orjson.loads(row["raw_json"]) == likert
    assert walk(media.wrap({"classifications": [likert]}, "image"), parsed).unlanded == []


def test_unknown_answer_key_beside_a_known_answer_is_an_error_with_nested_path() -> None:
    nested = {
        "feature_id": "cq2",
        "name": "sub",
        "radio_answer": {"feature_id": "ca2", "name": "yes", "classifications": []},
        "rationale": "because",
    }
    top = {
        "feature_id": "cq1",
        "name": "top",
        "radio_answer": {"feature_id": "ca1", "name": "a", "classifications": [nested]},
    }
    parsed = _parse(media.wrap({"classifications": [top]}, "image"))
    [err] = parsed.errors
    assert err.kind == "unknown_answer_key"
    assert err.extra["keys"] == ["rationale"]
    assert err.extra["path"] == (
        f"{LABEL_PATH}.annotations.classifications[0].radio_answer.classifications[0]"
    )
    # The known answer still landed.
    assert {r["answer_name"] for r in parsed.tables["classifications"]} == {"a", "yes"}


def test_message_scoped_answers_are_rows_with_their_message_id() -> None:
    base = {"feature_schema_id": "cqs", "value": "q"}
    answers = [
        {
            **base,
            "feature_id": "cq1",
            "name": "radio",
            "message_id": "m1",
            "conversational_radio_answer": {
                "feature_id": "ca1",
                "name": "good",
                "classifications": [
                    {"feature_id": "cq4", "name": "why", "text_answer": {"content": "clear"}}
                ],
            },
        },
        {
            **base,
            "feature_id": "cq2",
            "name": "checklist",
            "message_id": "m2",
            "conversational_checklist_answers": [
                {"feature_id": "ca2", "name": "safe", "classifications": []},
                {"feature_id": "ca3", "name": "polite", "classifications": []},
            ],
        },
        {
            **base,
            "feature_id": "cq3",
            "name": "free",
            "message_id": "m3",
            "conversational_text_answer": {"content": "fine answer"},
        },
    ]
    export = media.wrap({"classifications": answers}, "mmc")
    parsed = _parse(export)
    assert parsed.errors == []
    rows = {
        (r["question_feature_id"], r["answer_name"] or r["text"]): r
        for r in parsed.tables["classifications"]
    }
    assert rows[("cq1", "good")]["message_id"] == "m1"
    assert rows[("cq1", "good")]["answer_kind"] == "radio"
    assert rows[("cq4", "clear")]["message_id"] == "m1"  # a nested answer keeps its message
    assert rows[("cq2", "safe")]["message_id"] == "m2"
    assert rows[("cq2", "polite")]["answer_kind"] == "checklist"
    assert rows[("cq3", "fine answer")]["message_id"] == "m3"
    assert rows[("cq3", "fine answer")]["answer_kind"] == "text"
    assert {r["scope"] for r in parsed.tables["classifications"]} == {"message"}
    assert walk(export, parsed).unlanded == []


def test_the_multimodal_chat_sample_lands_its_message_scoped_radio() -> None:
    export = media.format_samples()["mmc-message-radio"]
    parsed = _parse(export)
    assert parsed.errors == []
    car = next(r for r in parsed.tables["classifications"] if r["answer_name"] == "Car")
    assert car["message_id"] == "clws2arr200073b6p7ehwkoh4"
    assert car["question_name"] == "Context subject"


def test_a_synthetic_conversations_message_scoped_answers_all_land_as_rows() -> None:
    # From #16 C's own walk: answered for messages 0, 2 and 4 of the conversation.
    spec = SyntheticSpec.make(
        n_rows=9, instances=2, seed=3, width=64, height=48, number=1, media=["conversational"]
    )
    export = build_row(spec, 0)
    parsed = parse_export_line(orjson.dumps(export), 0, source_id=spec.project_id)
    assert isinstance(parsed, ParsedRow) and parsed.errors == []
    scoped = [r for r in parsed.tables["classifications"] if r.get("message_id")]
    assert {r["message_id"] for r in scoped} == {"0", "2", "4"}
    assert walk(export, parsed).unlanded == []


def test_an_empty_unknown_key_has_nothing_to_lose() -> None:
    parsed = _parse(media.wrap({"frames": {}, "segments": {}}, "video"))
    assert parsed.errors == []


def test_dataset_card_counts_what_did_not_become_rows() -> None:
    from labelhaul.store import render_dataset_card

    errors = {"unknown_annotation_key": 3, "unknown_answer_shape": 1, "mask_corrupt": 2}
    card = render_dataset_card(make_manifest(errors_by_kind=errors))
    section = card.split("## Not turned into rows", 1)[1].split("\n## ", 1)[0]
    assert section.lstrip().startswith("4 part(s) of the export")
    assert "| unknown_annotation_key | 3 |" in section
    assert "| unknown_answer_shape | 1 |" in section
    assert "mask_corrupt" not in section  # a failed mask is a problem, not unparsed input
    assert "## Not turned into rows" not in render_dataset_card(
        make_manifest(errors_by_kind={"mask_corrupt": 2})
    )


def test_summary_artifact_counts_what_did_not_become_rows() -> None:
    record = {
        "mode": "full",
        "created": True,
        "version_id": "v000001",
        "current_version_id": "v000001",
        "rows_exported": 2,
        "errors_by_kind": {"unknown_annotation_key": 4, "unknown_annotation_kind": 1},
    }
    text = summary_markdown("ds", "/tmp/store", record, {})
    assert text.startswith("# 5 problems")
    assert "**Not turned into rows: 5**" in text
    assert "| unknown_annotation_key | 4 |" in text.split("Not turned into rows, by kind")[1]
    record["errors_by_kind"] = {"mask_corrupt": 1}
    assert "Not turned into rows" not in summary_markdown("ds", "/tmp/store", record, {})


def test_unparsed_kinds_are_the_ones_the_parser_emits() -> None:
    video = media.video_row()
    annotations = _annotations(video)
    annotations["frames"]["x9"] = {"objects": {}}  # not a frame number
    annotations["segments"]["cghost"] = [[1, 2]]  # names no object on any frame
    annotations["frames"]["5"]["objects"]["ccuboid"] = {"feature_id": "ccuboid", "name": "c"}
    annotations["point_clouds"] = [{"x": 1}]
    kinds = set()
    for export in (video, *media.format_samples().values()):
        kinds |= {e.kind for e in _parse(export).errors}
    # Each is input that did not become rows: the card and summary count it.
    assert kinds <= UNPARSED_KINDS
    assert {
        "unknown_annotation_key",
        "unknown_annotation_kind",
        "bad_frame_number",
        "frame_entry_without_annotation",
    } <= kinds


def test_classifications_on_the_question_itself_land_nested_and_custom_metrics_are_kept() -> None:
    q = {
        "feature_id": "cq1",
        "name": "top",
        "text_answer": {"content": "t"},
        "classifications": [
            {"feature_id": "cq2", "name": "under", "text_answer": {"content": "u"}}
        ],
        "custom_metrics": [{"name": "iou", "value": 0.5}],
    }
    export = media.wrap({"classifications": [q]}, "image")
    parsed = _parse(export)
    under = next(r for r in parsed.tables["classifications"] if r["question_feature_id"] == "cq2")
    assert (under["parent_feature_id"], under["depth"], under["text"]) == ("cq1", 1, "u")
    [err] = parsed.errors  # no column holds a classification's custom metrics: kept raw
    assert err.kind == "unknown_answer_key" and err.extra["keys"] == ["custom_metrics"]
    assert walk(export, parsed).unlanded == []
