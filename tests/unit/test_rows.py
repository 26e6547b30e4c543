"""Row parsing: every object, answer and relationship of the seed, nesting, and bad input."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from labelhaul import seed
from labelhaul.records import ErrorRecord
from labelhaul.rows import ParsedRow, parse_data_row, parse_export_line

PROJECT_ID = "cltd3vkju021907u63w2odj69"
MASK = "ImageSegmentationMask"


def _parse(obj: dict[str, Any]) -> ParsedRow:
    row = parse_export_line(orjson.dumps(obj), 123)
    assert isinstance(row, ParsedRow), row
    return row


def _labels(export: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for project in export.get("projects", {}).values():
        for label in project["labels"]:
            yield "label", label
    for exp in export.get("experiments", {}).values():
        for run in exp["runs"].values():
            for source, key in (("label", "labels"), ("prediction", "predictions")):
                for label in run.get(key, []):
                    yield source, label


def _walk_answers(
    classifications: list[dict[str, Any]], path: tuple[str, ...] = ()
) -> Iterator[tuple[dict[str, Any], dict[str, Any] | None, str]]:
    """Yield (question, answer or None for text, expected path)."""
    for q in classifications:
        qpath = (*path, q["name"])
        if "text_answer" in q:
            yield q, None, "/".join(qpath)
        answers = [q["radio_answer"]] if "radio_answer" in q else q.get("checklist_answers", [])
        for a in answers:
            yield q, a, "/".join((*qpath, a["name"]))
            yield from _walk_answers(a.get("classifications", []), (*qpath, a["name"]))


@pytest.mark.parametrize(
    "make", [seed.sample_project_export, seed.sample_model_run_export], ids=["project", "run"]
)
def test_every_object_answer_and_relationship_of_the_seed_is_in_the_tables(make: Any) -> None:
    export = make()
    row = _parse(export)
    assert row.errors == []
    assert row.data_row_id == export["data_row"]["id"]
    anns = {(r["source"], r["feature_id"]): r for r in row.tables["annotations"]}
    answers = row.tables["classifications"]
    n_objects = n_answers = n_rels = 0
    for source, label in _labels(export):
        objs = label["annotations"]["objects"]
        for obj in objs:
            n_objects += 1
            rec = anns[(source, obj["feature_id"])]
            assert rec["label_id"] == label["id"]
            assert rec["data_row_id"] == export["data_row"]["id"]
            for key in ("feature_schema_id", "name", "value", "annotation_kind"):
                assert rec[key] == obj[key]
            assert rec["valid"] is True
            if "bounding_box" in obj:
                box = obj["bounding_box"]
                assert (rec["bbox_left"], rec["bbox_top"]) == (box["left"], box["top"])
                assert (rec["bbox_width"], rec["bbox_height"]) == (box["width"], box["height"])
            if "polygon" in obj or "line" in obj:
                assert rec["points"] == obj.get("polygon", obj.get("line"))
            if "point" in obj:
                assert (rec["point_x"], rec["point_y"]) == (obj["point"]["x"], obj["point"]["y"])
            if "mask" in obj:
                assert rec["mask_url"] == obj["mask"]["url"]
                assert rec["composite_url"] == obj["composite_mask"]["url"]
                assert rec["mask_color"] == obj["composite_mask"]["color_rgb"]
        scoped = [(None, c) for c in label["annotations"]["classifications"]] + [
            (o["feature_id"], c) for o in objs for c in o["classifications"]
        ]
        for obj_id, cls in scoped:
            for q, a, path in _walk_answers([cls]):
                n_answers += 1
                matches = [
                    r
                    for r in answers
                    if r["source"] == source
                    and r["label_id"] == label["id"]
                    and r["question_feature_id"] == q["feature_id"]
                    and r["answer_feature_id"] == (a["feature_id"] if a else None)
                ]
                assert len(matches) == 1, (q["name"], path)
                m = matches[0]
                assert m["path"] == path
                assert m["object_feature_id"] == obj_id
                assert m["scope"] == ("object" if obj_id else "global")
                if a is None:
                    assert m["text"] == q["text_answer"]["content"]
                else:
                    assert m["answer_name"] == a["name"]
        for rel in label["annotations"].get("relationships", []):
            n_rels += 1
            (r,) = [x for x in row.tables["relationships"] if x["feature_id"] == rel["feature_id"]]
            body = rel["unidirectional_relationship"]
            assert (r["source_feature_id"], r["target_feature_id"]) == (
                body["source"],
                body["target"],
            )
            assert r["directed"] is True and r["valid"] is True
    assert len(row.tables["annotations"]) == n_objects
    assert len(answers) == n_answers
    assert len(row.tables["relationships"]) == n_rels
    assert len(row.tables["embeddings"]) == 2
    for table, records in row.tables.items():
        assert all(r["data_row_id"] == row.data_row_id for r in records), table


def test_project_details_labels_and_workflow_history() -> None:
    row = _parse(seed.sample_project_export())
    (dr,) = row.tables["data_rows"]
    assert dr["project_id"] == PROJECT_ID
    assert dr["workflow_status"] == "IN_REVIEW"
    assert dr["priority"] == 1 and dr["consensus_expected_label_count"] == 1
    assert (dr["width"], dr["height"]) == (2560, 1707)
    assert dr["last_activity_at"] == row.last_activity_at == "2024-04-08T16:34:01.000+00:00"
    (label,) = row.tables["labels"]
    assert label["project_id"] == PROJECT_ID and label["source"] == "label"
    assert label["seconds_to_create"] == 18 and label["skipped"] is False
    assert label["reviews"] == "[]"
    moves = row.tables["workflow_history"]
    assert [m["seq"] for m in moves] == [0, 1]
    assert moves[0]["next_task_name"] == "Initial review task"
    assert moves[1]["previous_task_id"] is None
    # Label-level records carry the project id.
    for table in ("labels", "annotations", "classifications", "relationships"):
        assert {r["project_id"] for r in row.tables[table]} == {PROJECT_ID}


def test_model_run_rows_carry_run_ids_and_source() -> None:
    export = seed.sample_model_run_export()
    row = _parse(export)
    (dr,) = row.tables["data_rows"]
    assert dr["experiment_id"] == "a2fb1fec-83fb-0858-2cfb-98f4757eae95"
    assert dr["model_run_id"] == "a2fb1fec-b8a5-0f96-b61e-0d5643fb8dec"
    assert dr["model_run_name"] == "iteration 1"
    assert dr["run_data_row_id"] == "42630da9-0dc4-462b-9aa0-5a17e85ff46a"
    assert dr["exif_rotation"] == "1"
    assert row.last_activity_at is None
    assert sorted(r["source"] for r in row.tables["labels"]) == ["label", "prediction"]
    sources = {r["source"] for r in row.tables["annotations"]}
    assert sources == {"label", "prediction"}
    for table in ("labels", "annotations", "classifications"):
        for r in row.tables[table]:
            assert r["model_run_id"] == dr["model_run_id"]
            assert r["experiment_id"] == dr["experiment_id"]
    # No confidence in the seed: null (COCO results default the score to 1.0).
    assert all(r["confidence"] is None for r in row.tables["annotations"])


def test_mask_jobs_group_instances_by_label_and_composite() -> None:
    row = _parse(seed.sample_project_export())
    (job,) = row.mask_jobs
    assert job.label_id == "clur5tlda1n2a07dc0i0zdd4k"
    assert (job.width, job.height) == (2560, 1707)
    assert job.composite_url is not None and job.composite_url.endswith("/index/1")
    colors = {i.feature_id: i.color for i in job.instances}
    assert colors["clur5tlyr1n2q07dc5joc4k7u"] == (10, 10, 125)
    assert len(colors) == 5
    assert all(i.instance_url and i.feature_id in i.instance_url for i in job.instances)

    run = _parse(seed.sample_model_run_export())
    assert sorted(len(j.instances) for j in run.mask_jobs) == [1, 2]
    assert len({j.composite_url for j in run.mask_jobs}) == 2


def test_mask_without_composite_still_gets_a_job() -> None:
    export = seed.sample_project_export()
    label = export["projects"][PROJECT_ID]["labels"][0]
    masks = [o for o in label["annotations"]["objects"] if "mask" in o]
    for m in masks[:2]:
        del m["composite_mask"]
    row = _parse(export)
    by_url = {j.composite_url: j for j in row.mask_jobs}
    assert set(by_url) == {None, masks[2]["composite_mask"]["url"]}
    assert {i.feature_id for i in by_url[None].instances} == {m["feature_id"] for m in masks[:2]}
    assert row.errors == []


def _nested(depth: int) -> dict[str, Any]:
    q: dict[str, Any] | None = None
    for level in reversed(range(depth)):
        q = {
            "feature_id": f"q{level}",
            "feature_schema_id": f"sq{level}",
            "name": f"question_{level}",
            "value": f"question_{level}",
            "radio_answer": {
                "feature_id": f"a{level}",
                "feature_schema_id": f"sa{level}",
                "name": f"answer_{level}",
                "value": f"answer_{level}",
                "classifications": [q] if q else [],
            },
        }
    assert q is not None
    return q


@pytest.mark.parametrize("depth", [5, 10])
def test_nested_classifications_to_any_depth(depth: int) -> None:
    export = seed.sample_project_export()
    label = export["projects"][PROJECT_ID]["labels"][0]
    label["annotations"]["classifications"] = [_nested(depth)]
    label["annotations"]["objects"][0]["classifications"] = [_nested(depth)]
    row = _parse(export)
    assert row.errors == []
    for scope, obj_id in (("global", None), ("object", "clur5tlyq1n2d07dcg9xldg90")):
        recs = [
            r
            for r in row.tables["classifications"]
            if r["scope"] == scope and r["object_feature_id"] == obj_id
        ]
        assert [r["depth"] for r in recs] == list(range(depth))
        for level, r in enumerate(recs):
            assert r["question_feature_id"] == f"q{level}"
            assert r["answer_feature_id"] == f"a{level}"
            assert r["parent_feature_id"] == (f"a{level - 1}" if level else obj_id)
            assert r["object_feature_id"] == obj_id
            expected = "/".join(f"question_{i}/answer_{i}" for i in range(level + 1))
            assert r["path"] == expected


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        (b'{"data_row": {"id": "x"', "malformed_line"),
        (b'{"data_row": {"id": "\xff\xfe"}}', "malformed_line"),
        (b"[1, 2]", "not_an_object"),
        (b'"text"', "not_an_object"),
        (b'{"data_row": {}}', "missing_data_row_id"),
        (b"", "malformed_line"),
    ],
)
def test_unusable_lines_give_an_error_record_with_the_offset(line: bytes, kind: str) -> None:
    rec = parse_export_line(line, 4096)
    assert isinstance(rec, ErrorRecord)
    assert (rec.kind, rec.offset, rec.stage) == (kind, 4096, "parse")


def test_wrong_export_kind_is_reported() -> None:
    line = orjson.dumps(seed.sample_model_run_export())
    rec = parse_export_line(line, 7, kind="project")
    assert isinstance(rec, ErrorRecord) and rec.kind == "wrong_export_kind"
    assert isinstance(parse_export_line(line, 7, kind="model_run"), ParsedRow)


def _with_objects(*extra: dict[str, Any], relationships: list[Any] | None = None) -> dict[str, Any]:
    export = seed.sample_project_export()
    ann = export["projects"][PROJECT_ID]["labels"][0]["annotations"]
    ann["objects"].extend(copy.deepcopy(list(extra)))
    if relationships is not None:
        ann["relationships"].extend(relationships)
    return export


BASE_OBJECTS = 12


def _errors_by_kind(row: ParsedRow) -> dict[str, list[ErrorRecord]]:
    out: dict[str, list[ErrorRecord]] = {}
    for e in row.errors:
        out.setdefault(e.kind, []).append(e)
    return out


def test_unknown_annotation_kind_is_kept_with_raw_json() -> None:
    weird = {"feature_id": "fx", "name": "cuboid", "annotation_kind": "ImageCuboid", "c": [1]}
    row = _parse(_with_objects(weird))
    (err,) = row.errors
    assert err.kind == "unknown_annotation_kind"
    assert (err.data_row_id, err.label_id, err.feature_id) == (
        row.data_row_id,
        "clur5tlda1n2a07dc0i0zdd4k",
        "fx",
    )
    assert err.offset == 123
    (rec,) = [r for r in row.tables["annotations"] if r["feature_id"] == "fx"]
    assert rec["valid"] is False and orjson.loads(rec["raw_json"]) == weird
    assert len(row.tables["annotations"]) == BASE_OBJECTS + 1
    assert len(row.tables["relationships"]) == 1


def _bbox(fid: str, **box: Any) -> dict[str, Any]:
    return {
        "feature_id": fid,
        "name": "bounding_box",
        "annotation_kind": "ImageBoundingBox",
        "classifications": [],
        "bounding_box": box,
    }


def test_bad_geometry_gives_error_records_and_the_rest_still_parses() -> None:
    objs = [
        {"feature_id": "nogeom", "name": "p", "annotation_kind": "ImagePolygon"},
        _bbox("negbox", top=1.0, left=2.0, width=-3.0, height=4.0),
        {
            "feature_id": "twopts",
            "name": "polygon",
            "annotation_kind": "ImagePolygon",
            "polygon": [{"x": 1, "y": 2}, {"x": 3, "y": 4}],
        },
        {"feature_id": "nanpt", "annotation_kind": "ImagePoint", "point": {"x": math.nan, "y": 1}},
        _bbox("infbox", top=1.0, left=math.inf, width=3.0, height=4.0),
        {
            "feature_id": "nomask",
            "annotation_kind": "ImageSegmentationMask",
            "mask": {},
        },
        {"annotation_kind": "ImageSegmentationMask", "mask": {"url": "https://m/1"}},
    ]
    dup = _bbox("clur5tlyq1n2d07dcg9xldg90", top=0, left=0, width=1, height=1)
    dangling = {
        "feature_id": "relx",
        "annotation_kind": "ImageUnidirectionalRelationship",
        "unidirectional_relationship": {"source": "clur5tlyq1n2d07dcg9xldg90", "target": "gone"},
    }
    # parse_data_row: NaN/inf cannot come through JSON, but can through decoded objects.
    row = parse_data_row(_with_objects(*objs, dup, relationships=[dangling]), offset=9)
    kinds = _errors_by_kind(row)
    assert {e.feature_id for e in kinds["missing_geometry"]} == {"nogeom", "nomask"}
    assert [e.feature_id for e in kinds["negative_bbox_size"]] == ["negbox"]
    assert [e.feature_id for e in kinds["too_few_points"]] == ["twopts"]
    assert {e.feature_id for e in kinds["non_finite_coordinates"]} == {"nanpt", "infbox"}
    assert [e.feature_id for e in kinds["duplicate_feature_id"]] == ["clur5tlyq1n2d07dcg9xldg90"]
    assert [e.feature_id for e in kinds["dangling_relationship"]] == ["relx"]
    assert [e.feature_id for e in kinds["missing_feature_id"]] == [None]
    assert all(e.label_id == "clur5tlda1n2a07dc0i0zdd4k" and e.offset == 9 for e in row.errors)
    anns = {r["feature_id"]: r for r in row.tables["annotations"]}
    assert anns[None]["valid"] is False and anns[None]["mask_url"] == "https://m/1"
    # Kept with a flag (duplicates dropped: the first object wins).
    assert len(row.tables["annotations"]) == BASE_OBJECTS + len(objs)
    assert anns["clur5tlyq1n2d07dcg9xldg90"]["bbox_width"] == 144.0
    for fid in ("nogeom", "negbox", "twopts", "nanpt", "infbox", "nomask"):
        assert anns[fid]["valid"] is False and anns[fid]["raw_json"]
    assert anns["nanpt"]["point_x"] is None  # no NaN reaches the tables
    assert anns["infbox"]["bbox_left"] is None
    rels = {r["feature_id"]: r for r in row.tables["relationships"]}
    assert rels["relx"]["valid"] is False
    assert rels["clur69pfa00023b6rkftlkucz"]["valid"] is True
    # Everything valid is still there.
    assert sum(r["valid"] for r in row.tables["annotations"]) == BASE_OBJECTS
    assert len(row.tables["classifications"]) == 12
    assert len(row.mask_jobs) == 1 and len(row.mask_jobs[0].instances) == 5


def test_bad_mask_colour_falls_back_to_instance_url() -> None:
    export = seed.sample_project_export()
    objs = export["projects"][PROJECT_ID]["labels"][0]["annotations"]["objects"]
    mask = next(o for o in objs if "mask" in o)
    mask["composite_mask"]["color_rgb"] = [300, 0]
    row = _parse(export)
    (err,) = row.errors
    assert err.kind == "bad_mask_color" and err.severity == "warning"
    fallback = next(j for j in row.mask_jobs if j.composite_url is None)
    assert [i.feature_id for i in fallback.instances] == [mask["feature_id"]]


def test_bidirectional_relationship_and_prediction_confidence() -> None:
    export = seed.sample_model_run_export()
    run = export["experiments"]["a2fb1fec-83fb-0858-2cfb-98f4757eae95"]["runs"]
    pred = run["a2fb1fec-b8a5-0f96-b61e-0d5643fb8dec"]["predictions"][0]
    objs = pred["annotations"]["objects"]
    objs[0]["confidence"] = 0.75
    objs[1]["score"] = 0.5
    cls = pred["annotations"]["classifications"][1]
    cls["radio_answer"]["confidence"] = 0.9
    pred["annotations"]["relationships"] = [
        {
            "feature_id": "rel2",
            "name": "near",
            "annotation_kind": "ImageBidirectionalRelationship",
            "bidirectional_relationship": {
                "source": objs[0]["feature_id"],
                "target": objs[1]["feature_id"],
            },
        }
    ]
    row = _parse(export)
    assert row.errors == []
    (rel,) = row.tables["relationships"]
    assert rel["directed"] is False and rel["source"] == "prediction" and rel["valid"]
    conf = {r["feature_id"]: r["confidence"] for r in row.tables["annotations"]}
    assert conf[objs[0]["feature_id"]] == 0.75
    assert conf[objs[1]["feature_id"]] == 0.5
    (ans,) = [
        r for r in row.tables["classifications"] if r["question_feature_id"] == cls["feature_id"]
    ]
    assert ans["confidence"] == 0.9


def test_attachments_and_metadata_become_long_tables() -> None:
    export = seed.sample_project_export()
    export["attachments"] = [
        {"id": "att1", "type": "IMAGE_OVERLAY", "value": "https://x/y.png", "name": "overlay"}
    ]
    export["metadata_fields"] = [
        {"schema_id": "s1", "schema_name": "tag", "value": "night"},
        {"schema_id": "s2", "schema_name": "split", "value": "id9", "value_name": "train"},
        {"schema_id": "s3", "schema_name": "score", "value": 0.5},
    ]
    row = _parse(export)
    (att,) = row.tables["attachments"]
    assert (att["type"], att["value"], att["name"]) == (
        "IMAGE_OVERLAY",
        "https://x/y.png",
        "overlay",
    )
    md = row.tables["metadata_fields"]
    assert [(m["schema_name"], m["type"], m["value"]) for m in md] == [
        ("tag", "string", "night"),
        ("split", "enum", "id9"),
        ("score", "number", "0.5"),
    ]
    assert md[1]["value_name"] == "train"


def test_dataset_export_without_projects_gives_a_data_row() -> None:
    export = seed.sample_project_export()
    del export["projects"]
    row = _parse(export)
    (dr,) = row.tables["data_rows"]
    assert dr["project_id"] is None and dr["dataset_name"] == "demo_dataset_img"
    assert row.tables["labels"] == []


def test_emulator_synthetic_rows_parse_cleanly() -> None:
    # The emulator's synthetic rows carry every optional field; they must parse with no error.
    from labelhaul.emulator.synthetic import SyntheticSpec, build_row

    spec = SyntheticSpec.make(n_rows=6, instances=3, seed=1, width=40, height=30)
    for i in range(spec.n_rows):
        row = _parse(build_row(spec, i))
        assert row.errors == []
        assert len(row.tables["attachments"]) == 1
        assert [m["schema_name"] for m in row.tables["metadata_fields"]] == ["tag", "split"]
        assert all(r["valid"] for r in row.tables["relationships"])
        assert all(r["valid"] for r in row.tables["annotations"])
        assert sum(len(j.instances) for j in row.mask_jobs) == 3
        assert all((j.width, j.height) == (40, 30) for j in row.mask_jobs)


def test_label_without_id_is_reported_and_kept() -> None:
    export = seed.sample_project_export()
    del export["projects"][PROJECT_ID]["labels"][0]["id"]
    row = _parse(export)
    assert [e.kind for e in row.errors] == ["missing_label_id"]
    assert len(row.tables["annotations"]) == BASE_OBJECTS
    assert {r["label_id"] for r in row.tables["annotations"]} == {None}


def _legacy_spec() -> Any:
    from labelhaul.emulator.synthetic import SyntheticSpec

    return SyntheticSpec.make(
        n_rows=14, instances=3, seed=3, width=40, height=30, number=1, legacy=True
    )


def test_signed_row_data_lands_without_its_signature_and_says_who_hosts_it() -> None:
    export = seed.sample_project_export()
    bare = "https://storage.labelbox.com/cjhfn5y6s%2Fimage.jpg"
    signing = "Expires=1717&KeyName=labelbox-assets-key-3&Signature=x"
    export["data_row"]["row_data"] = f"{bare}?{signing}"
    rec = _parse(export).tables["data_rows"][0]
    assert rec["row_data"] == bare
    assert rec["hosting"] == "labelbox"
    export["data_row"]["row_data"] = "https://b.s3.amazonaws.com/i.png?X-Amz-Signature=ff&v=1"
    rec = _parse(export).tables["data_rows"][0]
    assert (rec["row_data"], rec["hosting"]) == ("https://b.s3.amazonaws.com/i.png?v=1", "user")


def test_only_the_exported_projects_entry_lands_others_are_error_records() -> None:
    export = seed.sample_project_export()
    other = copy.deepcopy(export["projects"][PROJECT_ID])
    export["projects"]["cconsensus000000000000000"] = other
    both = _parse(export)
    assert len(both.tables["labels"]) == 2  # no source given: every entry is data
    row = parse_export_line(orjson.dumps(export), 9, source_id=PROJECT_ID)
    assert isinstance(row, ParsedRow)
    tables = ("data_rows", "labels", "annotations")
    assert {r["project_id"] for t in tables for r in row.tables[t]} == {PROJECT_ID}
    assert len(row.tables["labels"]) == 1
    assert len(row.tables["relationships"]) == len(
        other["labels"][0]["annotations"]["relationships"]
    )
    [err] = row.errors
    assert err.kind == "other_project_entry"
    assert err.extra["path"] == "projects.cconsensus000000000000000"
    assert orjson.loads(err.extra["raw"]) == other
    assert (err.data_row_id, err.offset) == (export["data_row"]["id"], 9)


def test_relationship_listed_in_objects_and_relationships_is_one_relationship() -> None:
    from labelhaul.emulator.synthetic import build_row

    spec = _legacy_spec()
    row = _parse(build_row(spec, 0))
    assert row.errors == []
    [rel] = row.tables["relationships"]
    assert rel["valid"] and rel["feature_id"] == spec.id("rl", 0)
    assert not [a for a in row.tables["annotations"] if a["feature_id"] == spec.id("rl", 0)]


def test_relationship_listed_twice_with_different_ends_is_still_a_duplicate() -> None:
    from labelhaul.emulator.synthetic import build_row

    export = build_row(_legacy_spec(), 0)
    label = export["projects"][_legacy_spec().project_id]["labels"][0]
    rel = label["annotations"]["relationships"][0]
    body = rel["unidirectional_relationship"]
    rel["unidirectional_relationship"] = {"source": body["target"], "target": body["source"]}
    row = _parse(export)
    assert [e.kind for e in row.errors] == ["duplicate_feature_id"]


def test_pre_2024_rows_land_without_errors() -> None:
    from labelhaul.emulator.synthetic import build_row

    spec = _legacy_spec()
    for i in range(spec.n_rows):
        row = _parse(build_row(spec, i))
        assert row.errors == [], i
        [dr] = row.tables["data_rows"]
        assert dr["global_key"] is None and dr["external_id"] == spec.external_id(i)
        assert row.last_activity_at is None
        assert len(row.tables["labels"]) == (1 if spec.has_label(i) else 0)
        masks = [a for a in row.tables["annotations"] if a["annotation_kind"] == MASK]
        assert len(masks) == (spec.instances if spec.has_objects(i) else 0)
        assert all(a["composite_url"] is None and a["mask_url"] for a in masks)
        if spec.has_objects(i):
            [job] = row.mask_jobs
            assert job.composite_url is None and len(job.instances) == spec.instances
            points = [a for a in row.tables["annotations"] if a["annotation_kind"] == "ImagePoint"]
            assert points[0]["feature_schema_id"] is None and points[0]["valid"]
        else:
            assert row.mask_jobs == []


def test_named_columns_for_scores_schema_kind_and_media_attributes() -> None:
    from labelhaul.emulator.synthetic import build_row

    spec = _legacy_spec()
    row = _parse(build_row(spec, 2))
    [label] = row.tables["labels"]
    assert label["consensus_score"] == 0.7
    assert label["benchmark_reference_label"] == spec.id("lb", 2)
    assert [m["schema_kind"] for m in row.tables["metadata_fields"]] == [
        "CustomMetadataString",
        "Enum",
    ]
    [dr] = row.tables["data_rows"]
    assert (dr["asset_type"], dr["exif_rotation"], dr["content_length"]) == ("image", "1", 1002)
    video = seed.sample_project_export()
    video["media_attributes"] = {"asset_type": "video", "frame_rate": 29.97, "frame_count": 300}
    [dr] = _parse(video).tables["data_rows"]
    assert (dr["asset_type"], dr["frame_rate"], dr["frame_count"]) == ("video", 29.97, 300)
    perf = seed.sample_project_export()
    perf["projects"][PROJECT_ID]["labels"][0]["performance_details"] = {
        "benchmark_reference_label": True
    }
    assert _parse(perf).tables["labels"][0]["benchmark_reference_label"] == "true"
