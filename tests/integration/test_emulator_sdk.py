"""The unmodified labelbox SDK exporting from the emulator over HTTP."""

from __future__ import annotations

from typing import Any

import labelbox as lb
import pytest
import requests
from lbox.exceptions import (
    ApiLimitError,
    AuthenticationError,
    MalformedQueryException,
    NetworkError,
    ResourceNotFoundError,
)

from labelhaul import seed
from labelhaul.emulator import EmulatorServer
from labelhaul.emulator.exports import rebase_url

ALL_PARAMS = {
    "attachments": True,
    "metadata_fields": True,
    "embeddings": True,
    "data_row_details": True,
    "project_details": True,
    "label_details": True,
    "performance_details": True,
    "interpolated_frames": True,
}


def _export_rows(task: Any, stream: lb.StreamType = lb.StreamType.RESULT) -> list[dict[str, Any]]:
    task.wait_till_done()
    assert task.status == "COMPLETE"
    return [out.json for out in task.get_buffered_stream(stream_type=stream)]


def _rebased_seed(base_url: str, task_id: str) -> dict[str, Any]:
    """The seed row as an export serves it: mask URLs on the emulator, composite URLs
    carrying the serving export task's id (as Labelbox's do)."""
    row = seed.sample_project_export()
    for proj in row["projects"].values():
        for obj in proj["labels"][0]["annotations"]["objects"]:
            for key in ("mask", "composite_mask"):
                if key in obj:
                    obj[key]["url"] = rebase_url(obj[key]["url"], base_url)
            if "composite_mask" in obj:
                url = obj["composite_mask"]["url"]
                head, tail = url.split("/tasks/", 1)
                obj["composite_mask"]["url"] = f"{head}/tasks/{task_id}/{tail.split('/', 1)[1]}"
    return row


def test_get_project_and_unknown_project(emulator: EmulatorServer, lb_client: Any) -> None:
    project = lb_client.get_project(emulator.seed_project_id)
    assert project.uid == emulator.seed_project_id
    assert project.name == "Image Annotation Import Demo"
    with pytest.raises(ResourceNotFoundError):
        lb_client.get_project("cdoesnotexist000000000000")
    with pytest.raises(ResourceNotFoundError):
        lb_client.get_model_run(emulator.seed_project_id)  # a project id is no model run


def test_seed_export_with_every_param_is_the_seed_row(
    emulator: EmulatorServer, lb_client: Any
) -> None:
    # The seed row is one ~20 KB line: chunks cut inside it, the SDK glues them back.
    emulator.chunk_bytes = 2_000
    emulator.split_lines = True
    project = lb_client.get_project(emulator.seed_project_id)
    task = project.export(
        params=ALL_PARAMS,
        filters={
            "last_activity_at": ["2000-01-01 00:00:00", "2050-01-01 00:00:00"],
            "label_created_at": ["2000-01-01", "2050-01-01"],
            "workflow_status": "InReview",
            "batch_ids": ["3f724e20-da3d-11ee-86a4-0145011952fd"],
            "data_row_ids": ["clf9spzxq029m071nehy60a6v"],
        },
    )
    rows = _export_rows(task)
    assert rows == [_rebased_seed(emulator.base_url, task.uid)]
    assert task.has_result() and not task.has_errors()
    assert task.get_total_lines(lb.StreamType.RESULT) == 1
    chunk_gets = [e for e in emulator.request_log if e.request_class == "chunk"]
    assert len(chunk_gets) > 3
    assert all("Authorization" not in e.headers for e in chunk_gets)
    ops = [e.operation for e in emulator.request_log if e.request_class == "graphql"]
    assert "CurrentUserPyApi" in ops and "GetExportFileFromOffsetPyApi" in ops


def test_default_params_drop_optional_fields(emulator: EmulatorServer, lb_client: Any) -> None:
    rows = _export_rows(lb_client.get_project(emulator.seed_project_id).export())
    assert len(rows) == 1
    row = rows[0]
    assert set(row) == {"data_row", "media_attributes", "projects"}
    assert "details" not in row["data_row"]
    proj = row["projects"][emulator.seed_project_id]
    assert "project_details" not in proj
    assert set(proj["labels"][0]) == {"label_kind", "version", "id", "annotations"}


@pytest.mark.parametrize(
    ("param", "where"),
    [
        ("attachments", lambda r, p: "attachments" in r),
        ("metadata_fields", lambda r, p: "metadata_fields" in r),
        ("embeddings", lambda r, p: "embeddings" in r),
        ("data_row_details", lambda r, p: "details" in r["data_row"]),
        ("project_details", lambda r, p: "project_details" in r["projects"][p]),
        ("label_details", lambda r, p: "label_details" in r["projects"][p]["labels"][0]),
        (
            "performance_details",
            lambda r, p: "performance_details" in r["projects"][p]["labels"][0],
        ),
    ],
)
def test_each_param_adds_its_field(
    emulator: EmulatorServer, lb_client: Any, param: str, where: Any
) -> None:
    pid = emulator.add_synthetic_project(n_rows=3, instances=2)
    project = lb_client.get_project(pid)
    off = _export_rows(project.export(params={param: False}))
    on = _export_rows(project.export(params={param: True}))
    assert len(on) == len(off) == 3
    assert all(where(r, pid) for r in on)
    assert not any(where(r, pid) for r in off)


def test_filters_really_filter(emulator: EmulatorServer, lb_client: Any) -> None:
    pid = emulator.add_synthetic_project(n_rows=24, instances=1, seed=11)
    spec = emulator.synthetic_spec(pid)
    project = lb_client.get_project(pid)

    def ids(filters: dict[str, Any]) -> list[str]:
        return [r["data_row"]["id"] for r in _export_rows(project.export(filters=filters))]

    def expect(pred: Any) -> list[str]:
        return [spec.data_row_id(i) for i in range(spec.n_rows) if pred(i)]

    assert ids({}) == expect(lambda i: True)
    # last activity of row i is 2024-01-01 i:30 UTC; label created at i:00.
    assert ids({"last_activity_at": ["2024-01-01 03:00:00", "2024-01-01 07:00:00"]}) == expect(
        lambda i: 3 <= i <= 6
    )
    assert ids({"label_created_at": ["2024-01-01 03:00:00", "2024-01-01 07:00:00"]}) == expect(
        lambda i: 3 <= i <= 7
    )
    assert ids({"label_created_at": [None, "2024-01-01 02:00:00"]}) == expect(lambda i: i <= 2)
    assert ids({"last_activity_at": ["2024-01-01 20:00:00", None]}) == expect(lambda i: i >= 20)
    for status, value in [
        ("InReview", "IN_REVIEW"),
        ("InRework", "IN_REWORK"),
        ("Done", "DONE"),
        ("ToLabel", "TO_LABEL"),
    ]:
        got = ids({"workflow_status": status})
        assert got == expect(lambda i, v=value: spec.workflow_status(i) == v)
        assert got
    batch = spec.batch_ids()[1]
    assert ids({"batch_ids": [batch]}) == expect(lambda i: spec.batch_id(i) == batch)
    wanted = [spec.data_row_id(i) for i in (1, 5, 9)]
    assert ids({"data_row_ids": wanted}) == wanted
    keys = [spec.global_key(i) for i in (2, 3)]
    assert ids({"global_keys": keys}) == expect(lambda i: i in (2, 3))
    # AND of several filters.
    assert ids(
        {
            "workflow_status": "Done",
            "last_activity_at": ["2024-01-01 00:00:00", "2024-01-01 12:00:00"],
        }
    ) == expect(lambda i: spec.workflow_status(i) == "DONE" and i < 12)


def test_date_filters_use_the_users_timezone(emulator: EmulatorServer, lb_client: Any) -> None:
    pid = emulator.add_synthetic_project(n_rows=12, instances=1)
    spec = emulator.synthetic_spec(pid)
    emulator.user_timezone = "America/New_York"  # UTC-5 in January
    rows = _export_rows(
        lb_client.get_project(pid).export(
            filters={"last_activity_at": ["2024-01-01 00:00:00", "2024-01-01 05:00:00"]}
        )
    )
    # 00:00-05:00 New York is 05:00-10:00 UTC: rows 5..9 (activity at i:30).
    assert [r["data_row"]["id"] for r in rows] == [spec.data_row_id(i) for i in range(5, 10)]


def test_a_filter_matching_nothing_has_no_result(emulator: EmulatorServer, lb_client: Any) -> None:
    task = lb_client.get_project(emulator.seed_project_id).export(
        filters={"workflow_status": "Done"}
    )
    task.wait_till_done()
    assert task.status == "COMPLETE"
    assert not task.has_result()
    assert task.get_total_file_size(lb.StreamType.RESULT) is None
    with pytest.raises(ValueError, match="does not have a RESULT stream"):
        task.get_buffered_stream()


def test_errors_stream(emulator: EmulatorServer, lb_client: Any) -> None:
    errors = [{"data_row_id": f"dr{i}", "error": f"could not export {i}"} for i in range(3)]
    emulator.add_error_lines(emulator.seed_project_id, errors)
    task = lb_client.get_project(emulator.seed_project_id).export()
    task.wait_till_done()
    assert task.has_errors() and task.has_result()
    assert task.get_total_lines(lb.StreamType.ERRORS) == 3
    got = [o.json for o in task.get_buffered_stream(stream_type=lb.StreamType.ERRORS)]
    assert got == errors


def test_large_synthetic_export_streams_every_row_in_order(
    emulator: EmulatorServer, lb_client: Any
) -> None:
    emulator.chunk_bytes = 64 * 1024
    pid = emulator.add_synthetic_project(n_rows=300, instances=3, seed=5)
    spec = emulator.synthetic_spec(pid)
    rows = _export_rows(lb_client.get_project(pid).export(params=ALL_PARAMS))
    assert [r["data_row"]["id"] for r in rows] == [spec.data_row_id(i) for i in range(300)]
    n_chunks = sum(1 for e in emulator.request_log if e.request_class == "chunk")
    assert n_chunks > 5
    url = rows[0]["projects"][pid]["labels"][0]["annotations"]["objects"][-1]["mask"]["url"]
    assert url.startswith(emulator.rest_url + f"/projects/{pid}/annotations/")


def test_model_run_export(emulator: EmulatorServer, lb_client: Any) -> None:
    run = lb_client.get_model_run(emulator.seed_model_run_id)
    assert run.model_id == "a2fb1fec-83fb-0858-2cfb-98f4757eae95"
    rows = _export_rows(run.export(params={"predictions": True, "model_run_details": True}))
    assert len(rows) == 1
    exp = rows[0]["experiments"]["a2fb1fec-83fb-0858-2cfb-98f4757eae95"]
    run_row = exp["runs"][emulator.seed_model_run_id]
    assert run_row["predictions"] and run_row["labels"]
    mask = next(
        o
        for o in run_row["labels"][0]["annotations"]["objects"]
        if o["annotation_kind"] == "ImageSegmentationMask"
    )
    assert mask["mask"]["url"].startswith(emulator.rest_url + "/models/")
    plain = _export_rows(run.export())
    plain_run = plain[0]["experiments"]["a2fb1fec-83fb-0858-2cfb-98f4757eae95"]["runs"]
    assert "predictions" not in plain_run[emulator.seed_model_run_id]


def test_slow_task_is_in_progress_then_complete(emulator: EmulatorServer, lb_client: Any) -> None:
    emulator.task_seconds = 1.0
    task = lb_client.get_project(emulator.seed_project_id).export()
    assert task.status == "IN_PROGRESS"
    task.wait_till_done(timeout_seconds=30)  # the SDK polls every 2 s
    assert task.status == "COMPLETE"
    polls = [e for e in emulator.request_log if e.operation == "GetUserCreatedTasksPyApi"]
    assert len(polls) >= 2


def test_failed_task(emulator: EmulatorServer, lb_client: Any) -> None:
    emulator.faults.set("graphql", "failed_task", next_n=1, message="Export exploded")
    task = lb_client.get_project(emulator.seed_project_id).export()
    task.wait_till_done()
    assert task.status == "FAILED"
    assert task._task.errors_url == "Export exploded"
    with pytest.raises(lb.ExportTask.ExportTaskException, match="failed"):
        task.get_buffered_stream()
    # next_n=1: the next export is fine again.
    assert _export_rows(lb_client.get_project(emulator.seed_project_id).export())


def _raw_export(client: Any, project_id: str, query: list[dict[str, Any]]) -> Any:
    # The SDK validates these client-side; a raw mutation shows what the server says.
    mutation = (
        "mutation exportDataRowsInProjectPyApi($input: ExportDataRowsInProjectInput!)"
        "{exportDataRowsInProject(input: $input){taskId isStreamable}}"
    )
    variables = {
        "input": {
            "taskName": None,
            "isStreamableReady": True,
            "filters": {"projectId": project_id, "searchQuery": {"scope": None, "query": query}},
            "params": {},
            "streamable": True,
        }
    }
    return client.execute(mutation, variables, error_log_key="errors")


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ([{"type": "task_queue_status", "status": "Archived"}], "unknown workflow status"),
        (
            [{"ids": [f"id{i}" for i in range(2001)], "operator": "is", "type": "data_row_id"}],
            "2000",
        ),
        (
            [
                {"ids": ["a"], "operator": "is", "type": "data_row_id"},
                {"ids": ["b"], "operator": "is", "type": "global_key"},
            ],
            "cannot both",
        ),
    ],
)
def test_server_side_validation(
    emulator: EmulatorServer, lb_client: Any, query: list[dict[str, Any]], message: str
) -> None:
    with pytest.raises(MalformedQueryException, match=message):
        _raw_export(lb_client, emulator.seed_project_id, query)


def test_sdk_client_side_validation_never_reaches_the_server(
    emulator: EmulatorServer, lb_client: Any
) -> None:
    project = lb_client.get_project(emulator.seed_project_id)
    emulator.request_log.clear()
    with pytest.raises(ValueError):
        project.export(filters={"workflow_status": "Archived"})
    with pytest.raises(ValueError):
        project.export(filters={"data_row_ids": ["a"], "global_keys": ["b"]})
    with pytest.raises(ValueError):
        project.export(filters={"data_row_ids": [f"id{i}" for i in range(2001)]})
    assert not [e for e in emulator.request_log if e.operation == "exportDataRowsInProjectPyApi"]


def test_wrong_or_missing_key_is_401(emulator: EmulatorServer) -> None:
    bad = lb.Client("not-the-key", endpoint=emulator.graphql_url, rest_endpoint=emulator.rest_url)
    with pytest.raises(AuthenticationError):
        bad.get_project(emulator.seed_project_id)
    body = {"query": "query CurrentUserPyApi { user { timezone } }"}
    r = requests.post(emulator.graphql_url, json=body, timeout=10)
    assert r.status_code == 401
    r = requests.post(
        emulator.graphql_url, json=body, headers={"Authorization": "Bearer nope"}, timeout=10
    )
    assert r.status_code == 401
    r = requests.post(
        emulator.graphql_url,
        json=body,
        headers={"Authorization": f"Bearer {emulator.api_key}"},
        timeout=10,
    )
    assert r.status_code == 200 and r.json()["data"]["user"]["timezone"] == "UTC"


def test_sdk_sees_rate_limit_and_reset_and_retries_5xx(
    emulator: EmulatorServer, lb_client: Any
) -> None:
    emulator.faults.set("graphql", "429", next_n=1, retry_after=7)
    with pytest.raises(ApiLimitError):
        lb_client.get_project(emulator.seed_project_id)
    emulator.faults.set("graphql", "reset", next_n=1)
    with pytest.raises(NetworkError):
        lb_client.get_project(emulator.seed_project_id)
    emulator.faults.set("graphql", "5xx", next_n=1, status=502)
    assert lb_client.get_project(emulator.seed_project_id).uid == emulator.seed_project_id
    statuses = [e.status for e in emulator.request_log if e.operation == "GetProjectPyApi"]
    assert statuses == [429, None, 502, 200]


def test_emulator_as_context_manager_releases_its_port() -> None:
    with EmulatorServer(with_seed=False) as emu:
        url = emu.graphql_url
        assert not emu.has_seed
        with pytest.raises(RuntimeError, match="with_seed=False"):
            _ = emu.seed_project_id
        r = requests.post(
            url, json={}, headers={"Authorization": f"Bearer {emu.api_key}"}, timeout=5
        )
        assert r.status_code == 400
    with pytest.raises(requests.ConnectionError):
        requests.post(url, json={}, timeout=2)
