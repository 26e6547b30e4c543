"""Every leaf field of the seed's two sample exports lands in a named column of a table.

The walk is generic: a field the parser forgets, or a new field in the seed, fails here unless
it is mapped below or listed in `rows.DROPPED_FIELDS` with a reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pytest

from labelhaul import seed
from labelhaul.emulator.synthetic import MEDIA_KINDS, SyntheticSpec, build_row
from labelhaul.rows import DROPPED_FIELDS, ParsedRow, parse_export_line
from labelhaul.urls import strip_signing

# Normalised path (see _normalise) → (table, column).
LEAF_COLUMNS: dict[str, tuple[str, str]] = {
    "data_row.id": ("data_rows", "data_row_id"),
    "data_row.global_key": ("data_rows", "global_key"),
    "data_row.row_data": ("data_rows", "row_data"),
    **{
        f"data_row.details.{k}": ("data_rows", k)
        for k in (
            "dataset_id",
            "dataset_name",
            "created_at",
            "updated_at",
            "last_activity_at",
            "created_by",
        )
    },
    **{
        f"media_attributes.{k}": ("data_rows", k)
        for k in (
            "height",
            "width",
            "mime_type",
            "exif_rotation",
            "asset_type",
            "frame_rate",
            "frame_count",
            "content_length",
        )
    },
    "data_row.external_id": ("data_rows", "external_id"),
    "embeddings[].id": ("embeddings", "embedding_id"),
    "embeddings[].name": ("embeddings", "name"),
    "embeddings[].dimensions": ("embeddings", "dimensions"),
    "embeddings[].is_custom": ("embeddings", "is_custom"),
    "embeddings[].values[].value[]": ("embeddings", "values"),
    "attachments": ("attachments", "*"),
    "metadata_fields": ("metadata_fields", "*"),
    "projects.<key>": ("data_rows", "project_id"),
    "projects.*.name": ("data_rows", "project_name"),
    "projects.*.project_tags": ("data_rows", "project_tags"),
    **{
        f"projects.*.project_details.{k}": ("data_rows", k)
        for k in (
            "ontology_id",
            "task_id",
            "task_name",
            "batch_id",
            "batch_name",
            "workflow_status",
            "priority",
            "consensus_expected_label_count",
        )
    },
    **{
        f"projects.*.project_details.workflow_history[].{k}": ("workflow_history", k)
        for k in (
            "action",
            "created_at",
            "created_by",
            "previous_task_name",
            "previous_task_id",
            "next_task_name",
            "next_task_id",
        )
    },
    "experiments.<key>": ("data_rows", "experiment_id"),
    "experiments.*.name": ("data_rows", "experiment_name"),
    "experiments.*.runs.<key>": ("data_rows", "model_run_id"),
    "experiments.*.runs.*.name": ("data_rows", "model_run_name"),
    "experiments.*.runs.*.run_data_row_id": ("data_rows", "run_data_row_id"),
    "LABEL.label_kind": ("labels", "label_kind"),
    "LABEL.version": ("labels", "version"),
    "LABEL.id": ("labels", "label_id"),
    **{
        f"LABEL.label_details.{k}": ("labels", k)
        for k in ("created_at", "updated_at", "created_by", "content_last_updated_at")
    },
    "LABEL.label_details.reviews": ("labels", "reviews"),
    **{
        f"LABEL.performance_details.{k}": ("labels", k)
        for k in (
            "seconds_to_create",
            "seconds_to_review",
            "skipped",
            "consensus_score",
            "benchmark_score",
            "benchmark_reference_label",
        )
    },
    **{
        f"OBJECT.{k}": ("annotations", k)
        for k in ("feature_id", "feature_schema_id", "name", "value", "annotation_kind")
    },
    **{
        f"OBJECT.bounding_box.{k}": ("annotations", f"bbox_{k}")
        for k in ("top", "left", "height", "width")
    },
    "OBJECT.point.x": ("annotations", "point_x"),
    "OBJECT.point.y": ("annotations", "point_y"),
    "OBJECT.polygon[].x": ("annotations", "points.x"),
    "OBJECT.polygon[].y": ("annotations", "points.y"),
    "OBJECT.line[].x": ("annotations", "points.x"),
    "OBJECT.line[].y": ("annotations", "points.y"),
    "OBJECT.mask.url": ("annotations", "mask_url"),
    "OBJECT.composite_mask.url": ("annotations", "composite_url"),
    "OBJECT.composite_mask.color_rgb[]": ("annotations", "mask_color"),
    **{
        f"REL.{k}": ("relationships", k)
        for k in ("feature_id", "feature_schema_id", "name", "value", "annotation_kind")
    },
    "REL.unidirectional_relationship.source": ("relationships", "source_feature_id"),
    "REL.unidirectional_relationship.target": ("relationships", "target_feature_id"),
    "CLS.feature_id": ("classifications", "question_feature_id"),
    "CLS.feature_schema_id": ("classifications", "question_schema_id"),
    "CLS.name": ("classifications", "question_name"),
    "CLS.value": ("classifications", "question_value"),
    "CLS.text_answer.content": ("classifications", "text"),
    **{
        f"CLS.{ans}.{k}": ("classifications", f"answer_{col}")
        for ans in ("radio_answer", "checklist_answers[]")
        for k, col in (
            ("feature_id", "feature_id"),
            ("feature_schema_id", "schema_id"),
            ("name", "name"),
            ("value", "value"),
        )
    },
}

# Leaves that the seed's samples leave empty but synthetic projects fill.
LEAF_COLUMNS.update(
    {
        "attachments[].id": ("attachments", "attachment_id"),
        "attachments[].type": ("attachments", "type"),
        "attachments[].name": ("attachments", "name"),
        "attachments[].value": ("attachments", "value"),
        "metadata_fields[].schema_id": ("metadata_fields", "schema_id"),
        "metadata_fields[].schema_name": ("metadata_fields", "schema_name"),
        "metadata_fields[].value": ("metadata_fields", "value"),
        "metadata_fields[].value_name": ("metadata_fields", "value_name"),
        "metadata_fields[].schema_kind": ("metadata_fields", "schema_kind"),
        # 2023 exports list each relationship in objects[] too (legacy synthetic rows).
        "OBJECT.unidirectional_relationship.source": ("relationships", "source_feature_id"),
        "OBJECT.unidirectional_relationship.target": ("relationships", "target_feature_id"),
    }
)
# A relationship listed in objects[] lands in `relationships`, not `annotations`.
ALSO_IN: dict[str, tuple[str, str]] = {
    f"OBJECT.{k}": ("relationships", k)
    for k in ("feature_id", "feature_schema_id", "name", "value", "annotation_kind")
}

# Empty containers that carry meaning get a JSON-text column; other empty lists ([] objects,
# [] classifications) have nothing to lose.
JSON_COLUMNS = {"LABEL.label_details.reviews", "projects.*.project_tags"}
EMPTY_TABLES = {"attachments", "metadata_fields"}


def _leaves(node: Any, path: str) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        if not node:
            yield path, node
        for key, value in node.items():
            if path in ("projects", "experiments") or path.endswith(".runs"):
                yield f"{path}.<key>", key
                yield from _leaves(value, f"{path}.*")
            else:
                yield from _leaves(value, f"{path}.{key}" if path else key)
    elif isinstance(node, list):
        if not node:
            yield path, node
        for item in node:
            yield from _leaves(item, f"{path}[]")
    else:
        yield path, node


_LABEL = re.compile(
    r"^(projects\.\*\.labels\[\]|experiments\.\*\.runs\.\*\.(labels|predictions)\[\])"
)


def _normalise(path: str) -> str:
    path = _LABEL.sub("LABEL", path)
    if "classifications[]." in path:
        return "CLS." + path.rsplit("classifications[].", 1)[1]
    path = path.replace("LABEL.annotations.objects[]", "OBJECT")
    path = path.replace("LABEL.annotations.relationships[]", "REL")
    return path


def _column_values(parsed: ParsedRow, table: str, column: str) -> list[Any]:
    out: list[Any] = []
    for rec in parsed.tables[table]:
        if column.startswith("points."):
            out.extend(p[column.split(".")[1]] for p in rec.get("points") or ())
        elif column in ("mask_color", "values"):
            out.extend(rec.get(column) or ())
        else:
            out.append(rec.get(column))
    return out


def _dropped(path: str) -> bool:
    return any(path == d or path.startswith(d + ".") for d in DROPPED_FIELDS)


SAMPLES = {
    "project": seed.sample_project_export,
    "model_run": seed.sample_model_run_export,
}


def _synthetic(row: int) -> dict[str, Any]:
    """A synthetic row (every annotation kind) with a classification nested 5 levels deep."""
    from labelhaul.emulator.synthetic import SyntheticSpec, build_row

    spec = SyntheticSpec.make(n_rows=4, instances=3, seed=7, width=64, height=48, number=1)
    export = build_row(spec, row)
    nested: list[dict[str, Any]] = []
    for depth in reversed(range(5)):
        nested = [
            {
                "feature_id": f"cdeepq{depth:019d}",
                "feature_schema_id": f"cdeepqs{depth:018d}",
                "name": f"depth_{depth}_question",
                "value": f"depth_{depth}_question",
                "radio_answer": {
                    "feature_id": f"cdeepa{depth:019d}",
                    "feature_schema_id": f"cdeepas{depth:018d}",
                    "name": f"depth_{depth}_answer",
                    "value": f"depth_{depth}_answer",
                    "classifications": nested,
                },
            }
        ]
    label = next(iter(export["projects"].values()))["labels"][0]
    label["annotations"]["classifications"].extend(nested)
    return export


def _legacy(row: int) -> dict[str, Any]:
    """A synthetic row shaped like a 2023 export (labelhaul.emulator.synthetic.build_row)."""
    from labelhaul.emulator.synthetic import SyntheticSpec, build_row

    spec = SyntheticSpec.make(
        n_rows=8, instances=3, seed=7, width=64, height=48, number=1, legacy=True
    )
    return build_row(spec, row)


SAMPLES = {
    **SAMPLES,
    "synthetic-0": lambda: _synthetic(0),
    "synthetic-3": lambda: _synthetic(3),
    "synthetic-legacy-0": lambda: _legacy(0),
    "synthetic-legacy-1": lambda: _legacy(1),
}


@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_every_leaf_lands_in_a_named_column(sample: str) -> None:
    export = SAMPLES[sample]()
    parsed = parse_export_line(orjson.dumps(export), 0)
    assert isinstance(parsed, ParsedRow)
    assert parsed.errors == []
    assert _check_leaves(export, parsed, annotations=True) > 100  # it visited the export


@pytest.mark.parametrize("kind", MEDIA_KINDS)
def test_every_leaf_outside_the_annotations_of_each_media_kind_lands(kind: str) -> None:
    # A label's annotations are tests/conformance.py's (test_conformance_walk.py); the data
    # row, media attributes, label details and the rest of each kind's rows are checked here.
    spec = SyntheticSpec.make(n_rows=3, instances=2, seed=7, width=64, height=48, media=[kind])
    checked = 0
    for row in range(spec.n_rows):
        export = build_row(spec, row)
        parsed = parse_export_line(orjson.dumps(export), 0)
        assert isinstance(parsed, ParsedRow)
        checked += _check_leaves(export, parsed, annotations=False)
    assert checked > 3 * 20


def _check_leaves(export: dict[str, Any], parsed: ParsedRow, *, annotations: bool) -> int:
    """Assert every leaf lands in its named column; return how many were checked."""
    unmapped: list[str] = []
    missing: list[str] = []
    checked = 0
    for raw_path, value in _leaves(export, ""):
        path = _normalise(raw_path)
        if _dropped(raw_path) or _dropped(path):
            continue
        if not annotations and _IN_ANNOTATIONS.match(path):
            continue
        if isinstance(value, list | dict) and not value:
            # An empty container: only meaningful where a JSON column keeps it.
            if path in JSON_COLUMNS:
                table, column = LEAF_COLUMNS[path]
                assert orjson.dumps(value).decode() in _column_values(parsed, table, column)
            elif path in LEAF_COLUMNS and LEAF_COLUMNS[path][0] in EMPTY_TABLES:
                assert parsed.tables[LEAF_COLUMNS[path][0]] == []
            continue
        if path not in LEAF_COLUMNS:
            unmapped.append(path)
            continue
        table, column = LEAF_COLUMNS[path]
        values = _column_values(parsed, table, column)
        if path in ALSO_IN:
            values += _column_values(parsed, *ALSO_IN[path])
        if path == "data_row.row_data":
            # Stored without its signature: the signed URL stays in the raw export only.
            value = strip_signing(value)
        if column == "values":
            # Parquet stores float32 (what embedding models produce); records keep the text.
            ok = value in values or float(np.float32(value)) in values
        elif isinstance(value, int | float) and not isinstance(value, bool):
            ok = any(
                isinstance(v, int | float) and not isinstance(v, bool) and v == value
                for v in values
            )
        else:
            ok = value in values
        checked += 1
        if not ok:
            missing.append(f"{raw_path}={value!r} not in {table}.{column}")
    assert unmapped == [], f"fields with no column (map them or add to DROPPED_FIELDS): {unmapped}"
    assert missing == []
    return checked


_IN_ANNOTATIONS = re.compile(r"^(LABEL\.annotations|OBJECT|REL|CLS)(\.|\[|$)")


def test_dropped_fields_have_reasons() -> None:
    assert DROPPED_FIELDS
    assert all(reason.strip() for reason in DROPPED_FIELDS.values())


def test_synthetic_nesting_to_depth_five_keeps_depth_and_path() -> None:
    parsed = parse_export_line(orjson.dumps(_synthetic(1)), 0)
    assert isinstance(parsed, ParsedRow)
    deep = {
        r["depth"]: r["path"]
        for r in parsed.tables["classifications"]
        if str(r.get("question_name", "")).startswith("depth_")
    }
    assert sorted(deep) == [0, 1, 2, 3, 4]
    assert deep[4] == "/".join(f"depth_{d}_question/depth_{d}_answer" for d in range(5))
