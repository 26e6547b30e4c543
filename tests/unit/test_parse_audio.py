"""Audio labels: global classifications, temporal ones with their range, segments; HTML rows."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from labelhaul.emulator.media import audio as audio_media
from labelhaul.emulator.synthetic import SyntheticSpec, build_row
from labelhaul.parse_audio import time_range
from labelhaul.records import UNPARSED_KINDS
from labelhaul.rows import ParsedRow, parse_export_line
from tests import media_samples as media

LABEL_PATH = f"projects.{media.PROJECT_ID}.labels[0]"


def _parse(export: dict[str, Any]) -> ParsedRow:
    parsed = parse_export_line(orjson.dumps(export), 0)
    assert isinstance(parsed, ParsedRow)
    return parsed


def _radio(fid: str, name: str, answer: str, **extra: Any) -> dict[str, Any]:
    return {
        "feature_id": fid,
        "feature_schema_id": f"{fid}s",
        "name": name,
        "value": name,
        "radio_answer": {"feature_id": f"{fid}a", "name": answer, "classifications": []},
        **extra,
    }


def test_temporal_classifications_get_their_range_in_milliseconds() -> None:
    export = media.wrap(
        {
            "classifications": [_radio("cq0", "quality", "clean")],
            "timestamp": [
                _radio("cq1", "speaker", "alice", timestamp={"start": 1200, "end": 3400}),
                {
                    "feature_id": "cq2",
                    "name": "words",
                    "text_answer": {"content": "hello"},
                    "timestamp": {"start": 3400.4, "end": 5000},
                },
            ],
        },
        "audio",
    )
    parsed = _parse(export)
    assert parsed.errors == []
    rows = {r["question_feature_id"]: r for r in parsed.tables["classifications"]}
    assert rows["cq0"]["scope"] == "global"
    assert (rows["cq0"]["time_start_ms"], rows["cq0"]["time_end_ms"]) == (None, None)
    assert (rows["cq1"]["time_start_ms"], rows["cq1"]["time_end_ms"]) == (1200, 3400)
    assert rows["cq1"]["scope"] == "temporal"
    assert rows["cq2"]["text"] == "hello"
    assert (rows["cq2"]["time_start_ms"], rows["cq2"]["time_end_ms"]) == (3400, 5000)


def test_segments_give_one_row_per_range_and_nested_answers_inherit_it() -> None:
    q = _radio("cq1", "event", "bark")
    q["radio_answer"]["classifications"] = [_radio("cq9", "loud", "yes")]
    export = media.wrap({"timestamp": [q], "segments": {"cq1": [[0, 500], [900, 1500]]}}, "audio")
    parsed = _parse(export)
    assert parsed.errors == []
    spans = sorted(
        (r["question_feature_id"], r["time_start_ms"], r["time_end_ms"])
        for r in parsed.tables["classifications"]
    )
    assert spans == [("cq1", 0, 500), ("cq1", 900, 1500), ("cq9", 0, 500), ("cq9", 900, 1500)]


def test_timestamp_as_an_object_of_classifications_is_read_too() -> None:
    q = _radio("cq1", "speaker", "bob", start=10, end=20)
    parsed = _parse(media.wrap({"timestamp": {"classifications": [q]}}, "audio"))
    assert parsed.errors == []
    [row] = parsed.tables["classifications"]
    assert (row["time_start_ms"], row["time_end_ms"]) == (10, 20)


@pytest.mark.parametrize(
    ("annotations", "kind", "path"),
    [
        (
            {"timestamp": [_radio("cq1", "s", "a", timestamp={"start": "soon"})]},
            "bad_time_range",
            "annotations.timestamp[0]",
        ),
        (
            {"timestamp": [_radio("cq1", "s", "a", timestamp={"start": 9, "end": 3})]},
            "bad_time_range",
            "annotations.timestamp[0]",
        ),
        (
            {"timestamp": [_radio("cq1", "s", "a")]},
            "missing_time_range",
            "annotations.timestamp[0]",
        ),
        (
            {"timestamp": [], "segments": {"cnobody": [[0, 10]]}},
            "unmatched_segments",
            "annotations.segments.cnobody",
        ),
        (
            {
                "timestamp": [_radio("cq1", "s", "a")],
                "segments": {"cq1": [[0, 10], "later"]},
            },
            "bad_time_range",
            "annotations.segments.cq1",
        ),
        ({"timestamp": "all of it"}, "unknown_annotation_key", "annotations.timestamp"),
    ],
)
def test_bad_temporal_input_is_an_error_with_its_path_and_raw_json(
    annotations: dict[str, Any], kind: str, path: str
) -> None:
    parsed = _parse(media.wrap(annotations, "audio"))
    found = [e for e in parsed.errors if e.kind == kind]
    assert found, parsed.errors
    assert found[0].extra["path"] == f"{LABEL_PATH}.{path}"
    assert found[0].extra["raw"]


@pytest.mark.parametrize("kind", ["video", "image"])
def test_segments_on_a_non_audio_row_are_frame_segments_naming_no_object(kind: str) -> None:
    # Outside audio, `segments` are frame ranges (labelhaul.parse_video reads them by key, as
    # an export may lack media_attributes): ranges of a feature on no frame are kept raw.
    parsed = _parse(media.wrap({"segments": {"cbox": [[1, 9]]}}, kind))
    [err] = parsed.errors
    assert (err.kind, err.feature_id) == ("frame_entry_without_annotation", "cbox")
    assert err.extra["path"] == f"projects.{media.PROJECT_ID}.labels[0].annotations.segments.cbox"
    assert orjson.loads(err.extra["raw"]) == [[1, 9]]
    assert err.kind in UNPARSED_KINDS  # counted in the card and the summary


def test_time_range_reads_both_shapes() -> None:
    assert time_range({"name": "x"}) is None
    assert time_range({"timestamp": {"start": 1, "end": 2}}) == (1, 2)
    assert time_range({"start": 5}) == (5, None)
    with pytest.raises(ValueError, match="not an object"):
        time_range({"timestamp": 7})


def _spec(kinds: list[str]) -> SyntheticSpec:
    return SyntheticSpec.make(n_rows=6, instances=2, seed=3, width=32, height=24, media=kinds)


def test_synthetic_audio_rows_land_their_ranges() -> None:
    spec = _spec(["audio"])
    for row in range(3):
        parsed = _parse(build_row(spec, row))
        assert parsed.errors == []
        assert parsed.tables["annotations"] == [] and parsed.mask_jobs == []
        [data_row] = parsed.tables["data_rows"]
        assert data_row["mime_type"] == "audio/mpeg"
        ranges = audio_media.temporal_ranges(spec, row)
        got: dict[str, set[tuple[int, int]]] = {}
        for r in parsed.tables["classifications"]:
            if r["time_start_ms"] is not None and r["depth"] == 0:
                got.setdefault(r["question_name"], set()).add(
                    (r["time_start_ms"], r["time_end_ms"])
                )
        assert got == {name: set(spans) for name, spans in ranges.items()}


def test_synthetic_html_rows_are_classifications_only() -> None:
    parsed = _parse(build_row(_spec(["html"]), 1))
    assert parsed.errors == []
    assert parsed.tables["annotations"] == []
    names = {r["question_name"] for r in parsed.tables["classifications"]}
    assert names == {"page_type", "is_paywalled", "topics", "headline"}
    assert parsed.tables["data_rows"][0]["mime_type"] == "text/html"


def test_an_edit_changes_the_audio_and_html_answers() -> None:
    from labelhaul.emulator.synthetic import SyntheticSource

    source = SyntheticSource(_spec(["audio", "html"]))
    before = [orjson.dumps(source.row(i)["projects"]) for i in (0, 1)]
    from datetime import UTC, datetime

    source.edit_rows([0, 1], datetime(2025, 1, 1, tzinfo=UTC))
    after = [source.row(i) for i in (0, 1)]
    speaker = next(
        r for r in _parse(after[0]).tables["classifications"] if r["question_name"] == "speaker"
    )
    assert (
        speaker["time_end_ms"] == audio_media.temporal_ranges(source.spec, 0)["speaker"][0][1] + 10
    )
    headline = next(
        r for r in _parse(after[1]).tables["classifications"] if r["question_name"] == "headline"
    )
    assert headline["text"].endswith("(revision 1)")
    assert [orjson.dumps(a["projects"]) for a in after] != before
