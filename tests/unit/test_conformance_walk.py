"""The conformance walk (tests/conformance.py) over every sample and every synthetic media kind.

Every leaf under a label's annotations must land in a row (by an explicit per-key rule, in
its own feature's row) or inside raw JSON an error record or a `raw_json` column keeps.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from labelhaul import seed
from labelhaul.emulator.synthetic import MEDIA_KINDS, SyntheticSpec, build_row
from labelhaul.rows import ParsedRow, parse_export_line
from tests import media_samples as media
from tests.conformance import RULES, normalise, walk


def _parse(export: dict[str, Any]) -> ParsedRow:
    parsed = parse_export_line(orjson.dumps(export), 0)
    assert isinstance(parsed, ParsedRow)
    return parsed


def _seed_samples() -> dict[str, Callable[[], dict[str, Any]]]:
    """The seed's image formats: each per-kind example in an image row, and the two exports."""
    out: dict[str, Callable[[], dict[str, Any]]] = {
        "seed-project-export": seed.sample_project_export,
        "seed-model-run-export": seed.sample_model_run_export,
    }
    for title, obj in seed.seed_objects():
        if title in (seed.PROJECT_EXPORT_TITLE, seed.MODEL_RUN_EXPORT_TITLE):
            continue
        key = "classifications" if title.startswith("Classification") else "objects"
        if title == "Relationship":
            key = "relationships"
        out[f"seed-{title}"] = lambda obj=obj, key=key: media.wrap({key: [obj]}, "image")
    return out


SAMPLES: dict[str, Callable[[], dict[str, Any]]] = {
    **{f"formats-{k}": (lambda v=v: v) for k, v in media.format_samples().items()},
    **_seed_samples(),
    "issue-video-box-3-key-frames": media.video_row,
    "issue-dicom-polyline": media.dicom_row,
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_leaf_of_every_sample_lands(name: str) -> None:
    export = SAMPLES[name]()
    report = walk(export, _parse(export))
    assert report.unlanded == []
    assert report.total >= 5  # the walk really visited the sample's annotations


# A kind's synthetic rows are walked once its generator module exists (others' kinds arrive
# at merge: drop the filter then).
_KINDS = [
    k
    for k in MEDIA_KINDS
    if k == "image" or importlib.util.find_spec(f"labelhaul.emulator.media.{k}") is not None
]


@pytest.mark.parametrize("kind", _KINDS)
@pytest.mark.parametrize("legacy", [False, True])
def test_every_leaf_of_a_synthetic_project_of_each_media_kind_lands(
    kind: str, legacy: bool
) -> None:
    spec = SyntheticSpec.make(
        n_rows=8, instances=3, seed=5, width=48, height=32, media=[kind], legacy=legacy
    )
    visited = 0
    for row in range(spec.n_rows):
        export = build_row(spec, row)
        report = walk(export, _parse(export))
        assert report.unlanded == [], f"row {row}"
        visited += report.total
    assert visited > 8 * 5


def test_a_leaf_the_parser_forgets_is_reported() -> None:
    export = seed.sample_project_export()
    parsed = _parse(export)
    assert walk(export, parsed).unlanded == []
    box = next(
        r for r in parsed.tables["annotations"] if r["annotation_kind"] == "ImageBoundingBox"
    )
    box["bbox_top"] = None
    [missing] = walk(export, parsed).unlanded
    assert ".bounding_box.top=" in missing and box["feature_id"] in missing


def test_a_value_in_another_features_row_does_not_count() -> None:
    a = {"feature_id": "cfa", "name": "n", "radio_answer": {"feature_id": "cfa1", "name": "x"}}
    b = {"feature_id": "cfb", "name": "n", "radio_answer": {"feature_id": "cfb1", "name": "y"}}
    export = media.wrap({"classifications": [a, b]}, "image")
    parsed = _parse(export)
    rows = parsed.tables["classifications"]
    rows[1]["answer_name"] = rows[0]["answer_name"] = "x"  # "y" vanished; "x" is still there
    [missing] = walk(export, parsed).unlanded
    assert "radio_answer.name='y'" in missing


def test_raw_json_counts_only_where_it_is_the_whole_node() -> None:
    export = media.video_row()
    parsed = _parse(export)
    assert walk(export, parsed).unlanded == []
    frames = next(e for e in parsed.errors if e.extra["path"].endswith(".frames"))
    raw = orjson.loads(frames.extra["raw"])
    del raw["5"]  # an error that kept only part of the frames
    parsed.errors[parsed.errors.index(frames)] = type(frames)(
        **{**frames.to_dict(), "extra": {**frames.extra, "raw": orjson.dumps(raw).decode()}}
    )
    assert walk(export, parsed).unlanded  # the frames' leaves now land nowhere
    parsed.errors.clear()
    assert len(walk(export, parsed).unlanded) > 30  # without the error: nothing lands


def test_a_leaf_with_no_rule_is_reported_even_when_its_value_is_in_a_table() -> None:
    export = media.wrap(
        {
            "objects": [
                {
                    "feature_id": "cbox",
                    "name": "box",
                    "annotation_kind": "ImageBoundingBox",
                    "bounding_box": {"top": 1.0, "left": 2.0, "height": 3.0, "width": 4.0},
                    "extra_note": "box",  # the same value as `name`, under a key no rule maps
                }
            ]
        },
        "image",
    )
    [missing] = walk(export, _parse(export)).unlanded
    assert "extra_note" in missing and "no rule" in missing


def test_normalise() -> None:
    label = "projects.cp.labels[0].annotations"
    assert normalise(f"{label}.objects[3].bounding_box.top") == "OBJECT.bounding_box.top"
    assert normalise(f"{label}.objects[3].classifications[0].radio_answer.name") == (
        "CLS.radio_answer.name"
    )
    assert normalise(f"{label}.timestamp[1].timestamp.start") == "CLS.timestamp.start"
    assert normalise(f"{label}.segments.cfeat[2][1]") == "SEGMENTS[][1]"
    run = "experiments.ce.runs.cr.predictions[2].annotations"
    assert normalise(f"{run}.relationships[0].name") == "REL.name"
    assert all(r.table in ("annotations", "classifications", "relationships") for r in RULES)
