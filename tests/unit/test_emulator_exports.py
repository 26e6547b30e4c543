"""Filter parsing/validation, params shaping and chunk planning of the emulator."""

from __future__ import annotations

from typing import Any

import pytest

from labelhaul import seed
from labelhaul.emulator.exports import (
    ExportInputError,
    ExportParams,
    parse_search_query,
    plan_chunks,
    rebase_url,
    serialize_row,
    shape_row,
)
from labelhaul.emulator.faults import FaultPlan

SEED_PID = "cltd3vkju021907u63w2odj69"


def _between(kind: str, lo: str, hi: str, tz: str | None = "UTC") -> dict[str, Any]:
    return {
        "type": kind,
        "value": {"operator": "BETWEEN", "timezone": tz, "value": {"min": lo, "max": hi}},
    }


@pytest.mark.parametrize(
    ("clauses", "message"),
    [
        ([{"type": "task_queue_status", "status": "Labeled"}], "unknown workflow status"),
        ([{"ids": [str(i) for i in range(2001)], "operator": "is", "type": "data_row_id"}], "2000"),
        ([{"ids": [str(i) for i in range(2001)], "operator": "is", "type": "global_key"}], "2000"),
        ([{"ids": [str(i) for i in range(2001)], "operator": "is", "type": "batch"}], "2000"),
        (
            [
                {"ids": ["a"], "operator": "is", "type": "data_row_id"},
                {"ids": ["k"], "operator": "is", "type": "global_key"},
            ],
            "cannot both",
        ),
        ([{"ids": [], "operator": "is", "type": "batch"}], "non-empty"),
        ([{"type": "no_such_filter"}], "unknown search filter"),
        ([_between("labeled_at", "yesterday", "2024-01-01")], "invalid date"),
        ([_between("labeled_at", "2024-01-01", "2024-01-02", tz="Mars/Olympus")], "timezone"),
    ],
)
def test_invalid_search_queries_are_refused(clauses: list[Any], message: str) -> None:
    with pytest.raises(ExportInputError, match=message):
        parse_search_query(clauses, "UTC")


def test_2000_ids_are_accepted() -> None:
    flt = parse_search_query(
        [{"ids": [str(i) for i in range(2000)], "operator": "is", "type": "data_row_id"}], "UTC"
    )
    assert flt.data_row_ids is not None and len(flt.data_row_ids) == 2000


def test_naive_dates_are_read_in_the_given_timezone() -> None:
    row = seed.sample_project_export()  # last_activity_at 2024-04-08T16:34:01Z
    # 12:34 in New York (EDT, UTC-4) is 16:34 UTC.
    inside = _between(
        "data_row_last_activity_at",
        "2024-04-08 12:30:00",
        "2024-04-08 12:40:00",
        "America/New_York",
    )
    outside = _between(
        "data_row_last_activity_at",
        "2024-04-08 16:30:00",
        "2024-04-08 16:40:00",
        "America/New_York",
    )
    assert parse_search_query([inside], "UTC").matches(row, SEED_PID)
    assert not parse_search_query([outside], "UTC").matches(row, SEED_PID)
    # Without a timezone in the clause the user's default applies.
    no_tz = _between(
        "data_row_last_activity_at", "2024-04-08 16:30:00", "2024-04-08 16:40:00", None
    )
    assert parse_search_query([no_tz], "UTC").matches(row, SEED_PID)
    assert not parse_search_query([no_tz], "Asia/Tokyo").matches(row, SEED_PID)


def test_iso_offset_dates_and_one_sided_ranges() -> None:
    row = seed.sample_project_export()  # label created 2024-04-08T16:21:26Z
    ge = {
        "type": "labeled_at",
        "value": {
            "operator": "GREATER_THAN_OR_EQUAL",
            "timezone": "UTC",
            "value": "2024-04-08T16:21:00+0000",
        },
    }
    le = {
        "type": "labeled_at",
        "value": {
            "operator": "LESS_THAN_OR_EQUAL",
            "timezone": "UTC",
            "value": "2024-04-08T16:21:00+0000",
        },
    }
    assert parse_search_query([ge], "UTC").matches(row, SEED_PID)
    assert not parse_search_query([le], "UTC").matches(row, SEED_PID)


def test_workflow_batch_and_id_filters() -> None:
    row = seed.sample_project_export()  # IN_REVIEW, batch 3f724e20-...

    def ok(clause: dict[str, Any]) -> bool:
        return parse_search_query([clause], "UTC").matches(row, SEED_PID)

    assert ok({"type": "task_queue_status", "status": "InReview"})
    assert not ok({"type": "task_queue_status", "status": "Done"})
    assert not ok({"type": "task_queue_not_exist"})
    assert ok({"ids": ["3f724e20-da3d-11ee-86a4-0145011952fd"], "operator": "is", "type": "batch"})
    assert not ok({"ids": ["other"], "operator": "is", "type": "batch"})
    assert ok({"ids": ["clf9spzxq029m071nehy60a6v"], "operator": "is", "type": "data_row_id"})
    assert not ok({"ids": ["x"], "operator": "is", "type": "data_row_id"})
    gk = "2560px-Kitano_Street_Kobe01s5s4110.jpeg"
    assert ok({"ids": [gk], "operator": "is", "type": "global_key"})


def test_params_drop_exactly_what_they_name() -> None:
    base = "http://127.0.0.1:9"
    bare = shape_row(seed.sample_project_export(), ExportParams(), "project", base)
    assert set(bare) == {"data_row", "media_attributes", "projects"}
    assert "details" not in bare["data_row"]
    proj = bare["projects"][SEED_PID]
    assert "project_details" not in proj
    label = proj["labels"][0]
    assert "label_details" not in label and "performance_details" not in label
    assert label["annotations"]["objects"]  # annotations always stay

    full = ExportParams(
        attachments=True,
        embeddings=True,
        metadata_fields=True,
        data_row_details=True,
        project_details=True,
        performance_details=True,
        label_details=True,
    )
    everything = shape_row(seed.sample_project_export(), full, "project", base)
    original = seed.sample_project_export()
    # With every param the row is the seed's, except mask URLs now on the emulator.
    for obj in original["projects"][SEED_PID]["labels"][0]["annotations"]["objects"]:
        for key in ("mask", "composite_mask"):
            if key in obj:
                obj[key]["url"] = rebase_url(obj[key]["url"], base)
    assert everything == original


def test_model_run_params() -> None:
    base = "http://h"
    row = shape_row(seed.sample_model_run_export(), ExportParams(), "model_run", base)
    run = next(iter(next(iter(row["experiments"].values()))["runs"].values()))
    assert "predictions" not in run and "run_data_row_id" not in run and run["labels"]
    row = shape_row(
        seed.sample_model_run_export(),
        ExportParams(predictions=True, model_run_details=True),
        "model_run",
        base,
    )
    run = next(iter(next(iter(row["experiments"].values()))["runs"].values()))
    assert run["predictions"] and run["run_data_row_id"]


def test_rebase_url_keeps_path() -> None:
    url = "https://api.labelbox.com/api/v1/tasks/t/masks/c/index/1"
    assert (
        rebase_url(url, "http://127.0.0.1:5/")
        == "http://127.0.0.1:5/api/v1/tasks/t/masks/c/index/1"
    )


def test_chunks_are_line_aligned_and_cover_the_stream() -> None:
    lines = [serialize_row({"i": i, "pad": "x" * (i * 7 % 50)}) for i in range(40)]
    plan = plan_chunks(lambda: iter(lines), chunk_bytes=200)
    assert plan.total_size == sum(len(x) for x in lines)
    assert plan.total_lines == 40
    assert len(plan.chunks) > 3
    pos, line = 0, 0
    for c in plan.chunks:
        assert c.start == pos and c.line_start == line
        body = b"".join(lines[c.row_lo : c.row_hi])
        assert len(body) == c.end - c.start + 1
        assert len(body) <= 200 or c.row_hi - c.row_lo == 1
        pos, line = c.end + 1, c.line_end + 1
    assert pos == plan.total_size and line == 40


def test_one_oversized_line_gets_its_own_chunk() -> None:
    lines = [b"a\n", b"b" * 500 + b"\n", b"c\n"]
    plan = plan_chunks(lambda: iter(lines), chunk_bytes=100)
    assert [(c.row_lo, c.row_hi) for c in plan.chunks] == [(0, 1), (1, 2), (2, 3)]


def test_fault_plan_next_n_and_rate() -> None:
    plan = FaultPlan(seed=5)
    plan.set("chunk", "5xx", next_n=2, status=502)
    fired = [plan.draw("chunk", "/x", ("5xx",)) for _ in range(4)]
    assert [len(f) for f in fired] == [1, 1, 0, 0]
    assert fired[0][0].params == {"status": 502}
    plan.clear()
    plan.set("mask", "429", rate=0.5)
    a = [bool(plan.draw("mask", "/m", ("429",))) for _ in range(200)]
    plan.clear()
    plan.set("mask", "429", rate=0.5)
    b = [bool(plan.draw("mask", "/m", ("429",))) for _ in range(200)]
    assert a == b  # seeded: the same run of faults each time
    assert 60 < sum(a) < 140
    assert not plan.draw("graphql", "/graphql", ("429",))  # other classes untouched


def test_fault_plan_match_and_validation() -> None:
    plan = FaultPlan()
    plan.set("graphql", "reset", next_n=1, match="GetExportFileFromOffsetPyApi")
    assert not plan.draw("graphql", "/graphql GetUserPyApi", ("reset",))
    assert plan.draw("graphql", "/graphql GetExportFileFromOffsetPyApi", ("reset",))
    with pytest.raises(ValueError):
        plan.set("graphql", "explode", next_n=1)
    with pytest.raises(ValueError):
        plan.set("s3", "5xx", next_n=1)
    with pytest.raises(ValueError):
        plan.set("mask", "5xx")
    with pytest.raises(ValueError):
        plan.set("mask", "5xx", rate=2.0)
    with pytest.raises(ValueError, match="request_class='graphql'"):
        plan.set("chunk", "slow_task", next_n=1, seconds=3)


def test_row_times_are_timezone_aware() -> None:
    # The sample's timestamps carry +00:00; a naive one would be read as UTC.
    flt = parse_search_query(
        [_between("labeled_at", "2024-04-08 16:21:26", "2024-04-08 16:21:26")], "UTC"
    )
    assert flt.matches(seed.sample_project_export(), SEED_PID)  # bounds are inclusive


@pytest.mark.parametrize("size", [1, 7, 64, 199, 10_000])
def test_split_chunks_cut_inside_lines_and_rebuild_the_stream(size: int) -> None:
    lines = [serialize_row({"i": i, "pad": "y" * (i * 13 % 90)}) for i in range(25)]
    stream = b"".join(lines)
    plan = plan_chunks(lambda: iter(lines), chunk_bytes=size, split_lines=True)
    assert plan.total_size == len(stream) and plan.total_lines == 25
    rebuilt = b""
    for c in plan.chunks:
        body = b"".join(lines[c.row_lo : c.row_hi])
        part = body[c.start - c.row_offset : c.end - c.row_offset + 1]
        assert len(part) == c.end - c.start + 1
        assert len(part) == size or c is plan.chunks[-1]
        assert stream[: c.start].count(b"\n") == c.line_start
        rebuilt += part
    assert rebuilt == stream


def _synthetic_row(row: int = 0) -> dict[str, Any]:
    from labelhaul.emulator.synthetic import SyntheticSpec, build_row

    spec = SyntheticSpec.make(n_rows=8, instances=2, seed=1, width=32, height=24, number=9)
    return build_row(spec, row)


def test_each_export_signs_labelbox_hosted_row_data_afresh() -> None:
    from urllib.parse import parse_qs, urlsplit

    from labelhaul.urls import strip_signing

    base, full = "http://h", ExportParams()
    stored = _synthetic_row(0)["data_row"]["row_data"]
    one = shape_row(_synthetic_row(0), full, "project", base, task_id="ctask1", expires=100)
    two = shape_row(_synthetic_row(0), full, "project", base, task_id="ctask2", expires=200)
    again = shape_row(_synthetic_row(0), full, "project", base, task_id="ctask1", expires=100)
    url1, url2 = one["data_row"]["row_data"], two["data_row"]["row_data"]
    assert url1 != url2 and url1 == again["data_row"]["row_data"]  # chunks rebuild the same
    q = parse_qs(urlsplit(url1).query)
    assert set(q) == {"Expires", "KeyName", "Signature"} and q["Expires"] == ["100"]
    assert strip_signing(url1) == strip_signing(url2) == stored
    # A presigned URL to the user's own bucket is served as uploaded.
    user = _synthetic_row(3)["data_row"]["row_data"]
    shaped = shape_row(_synthetic_row(3), full, "project", base, task_id="ctask1")
    assert shaped["data_row"]["row_data"] == user


def test_composite_urls_carry_the_export_task_id() -> None:
    row = shape_row(_synthetic_row(1), ExportParams(), "project", "http://h", task_id="ctaskxyz")
    masks = [
        o
        for o in next(iter(row["projects"].values()))["labels"][0]["annotations"]["objects"]
        if "composite_mask" in o
    ]
    assert masks
    for obj in masks:
        assert obj["composite_mask"]["url"].startswith("http://h/api/v1/tasks/ctaskxyz/masks/")
        assert "/tasks/" not in obj["mask"]["url"]


def test_a_project_export_holds_only_that_projects_entry() -> None:
    row = _synthetic_row(0)
    pid = next(iter(row["projects"]))
    row["projects"]["cotherproject00000000000"] = {"name": "other", "labels": []}
    shaped = shape_row(row, ExportParams(), "project", "http://h", project_id=pid)
    assert list(shaped["projects"]) == [pid]
