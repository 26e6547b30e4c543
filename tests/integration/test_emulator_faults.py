"""Each fault knob fires, seen by a plain HTTP client and by the SDK."""

from __future__ import annotations

import json
import time
from typing import Any

import labelbox as lb
import pytest
import requests
from lbox.exceptions import ApiLimitError

from labelhaul.emulator import EmulatorServer

_OFFSET_QUERY = (
    "query GetExportFileFromOffsetPyApi"
    "($where: WhereUniqueIdInput, $streamType: TaskStreamType!, $offset: UInt64!)"
    "{task(where: $where){exportFileFromOffset(streamType: $streamType, offset: $offset)"
    "{offsets {start end} lines {start end} file}}}"
)


def _file_info(client: Any, task_id: str, offset: int) -> dict[str, Any]:
    res = client.execute(
        _OFFSET_QUERY,
        {"where": {"id": task_id}, "streamType": "RESULT", "offset": str(offset)},
        error_log_key="errors",
    )
    info: dict[str, Any] = res["task"]["exportFileFromOffset"]
    return info


@pytest.fixture
def export_task(emulator: EmulatorServer, lb_client: Any) -> Any:
    emulator.chunk_bytes = 4_000
    pid = emulator.add_synthetic_project(n_rows=12, instances=2)
    task = lb_client.get_project(pid).export()
    task.wait_till_done()
    assert task.status == "COMPLETE"
    return task


@pytest.fixture
def chunk_url(lb_client: Any, export_task: Any) -> str:
    url: str = _file_info(lb_client, export_task.uid, 0)["file"]
    return url


@pytest.fixture
def mask_url(emulator: EmulatorServer, lb_client: Any, export_task: Any) -> str:
    row = next(iter(export_task.get_buffered_stream())).json
    proj = next(iter(row["projects"].values()))
    obj = proj["labels"][0]["annotations"]["objects"][-1]
    url: str = obj["composite_mask"]["url"]
    return url


def _get(url: str, key: str | None = None) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return requests.get(url, headers=headers, timeout=10)


def test_chunk_file_offsets_match_the_bytes(
    emulator: EmulatorServer, lb_client: Any, export_task: Any
) -> None:
    total = export_task.get_total_file_size(lb.StreamType.RESULT)
    stream = b""
    offset, line = 0, 0
    while offset < total:
        info = _file_info(lb_client, export_task.uid, offset)
        body = _get(info["file"]).content
        assert int(info["offsets"]["start"]) == offset
        assert len(body) == int(info["offsets"]["end"]) - offset + 1
        assert int(info["lines"]["start"]) == line
        stream += body
        offset = int(info["offsets"]["end"]) + 1
        line = int(info["lines"]["end"]) + 1
    assert len(stream) == total
    assert stream.count(b"\n") == export_task.get_total_lines(lb.StreamType.RESULT) == 12
    # Resuming inside a chunk gives a file starting exactly there.
    mid = len(stream.split(b"\n", 1)[0]) + 1 + 10
    info = _file_info(lb_client, export_task.uid, mid)
    body = _get(info["file"]).content
    assert int(info["offsets"]["start"]) == mid and int(info["lines"]["start"]) == 1
    assert body == stream[mid : int(info["offsets"]["end"]) + 1]
    with pytest.raises(Exception, match="out of range"):
        _file_info(lb_client, export_task.uid, total)


@pytest.mark.parametrize("request_class", ["chunk", "mask"])
def test_429_with_retry_after(
    emulator: EmulatorServer, chunk_url: str, mask_url: str, request_class: str
) -> None:
    url = chunk_url if request_class == "chunk" else mask_url
    emulator.faults.set(request_class, "429", next_n=2, retry_after=3)
    for _ in range(2):
        r = _get(url, emulator.api_key)
        assert r.status_code == 429 and r.headers["Retry-After"] == "3"
    assert _get(url, emulator.api_key).status_code == 200


@pytest.mark.parametrize("request_class", ["chunk", "mask"])
def test_5xx(emulator: EmulatorServer, chunk_url: str, mask_url: str, request_class: str) -> None:
    url = chunk_url if request_class == "chunk" else mask_url
    emulator.faults.set(request_class, "5xx", next_n=1, status=500)
    assert _get(url, emulator.api_key).status_code == 500
    emulator.faults.set(request_class, "5xx", next_n=1)
    assert _get(url, emulator.api_key).status_code == 503
    assert _get(url, emulator.api_key).status_code == 200


@pytest.mark.parametrize("request_class", ["chunk", "mask"])
def test_reset(emulator: EmulatorServer, chunk_url: str, mask_url: str, request_class: str) -> None:
    url = chunk_url if request_class == "chunk" else mask_url
    emulator.faults.set(request_class, "reset", next_n=1)
    with pytest.raises(requests.ConnectionError):
        _get(url, emulator.api_key)
    assert _get(url, emulator.api_key).status_code == 200
    assert emulator.request_log.entries()[-2].status is None


@pytest.mark.parametrize("request_class", ["chunk", "mask"])
def test_truncate(
    emulator: EmulatorServer, chunk_url: str, mask_url: str, request_class: str
) -> None:
    url = chunk_url if request_class == "chunk" else mask_url
    full = _get(url, emulator.api_key).content
    emulator.faults.set(request_class, "truncate", next_n=1, fraction=0.3)
    with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.ConnectionError)):
        _get(url, emulator.api_key)
    # What arrives before the close is the first part of the real body.
    with requests.get(
        url, headers={"Authorization": f"Bearer {emulator.api_key}"}, stream=True, timeout=10
    ) as r:
        assert int(r.headers["Content-Length"]) == len(full)
        assert r.raw.read(10) == full[:10]


def test_latency(emulator: EmulatorServer, chunk_url: str) -> None:
    rule = emulator.faults.set("chunk", "latency", next_n=1, seconds=0.3)
    started = time.monotonic()
    assert _get(chunk_url).status_code == 200
    assert time.monotonic() - started >= 0.3  # a lower bound: sleep guarantees it
    assert rule.fired == 1


def test_rate_one_and_zero(emulator: EmulatorServer, chunk_url: str) -> None:
    emulator.faults.set("chunk", "5xx", rate=0.0)
    assert all(_get(chunk_url).status_code == 200 for _ in range(5))
    emulator.faults.clear()
    emulator.faults.set("chunk", "5xx", rate=1.0)
    assert all(_get(chunk_url).status_code == 503 for _ in range(5))
    emulator.faults.clear()
    assert _get(chunk_url).status_code == 200


def test_faults_stay_in_their_class(
    emulator: EmulatorServer, lb_client: Any, chunk_url: str, mask_url: str
) -> None:
    emulator.faults.set("mask", "5xx", rate=1.0)
    assert _get(chunk_url).status_code == 200
    assert lb_client.get_project(emulator.seed_project_id)
    assert _get(mask_url, emulator.api_key).status_code == 503


def test_graphql_fault_matching_one_operation(emulator: EmulatorServer, lb_client: Any) -> None:
    emulator.faults.set("graphql", "429", rate=1.0, match="GetExportFileFromOffsetPyApi")
    task = lb_client.get_project(emulator.seed_project_id).export()
    task.wait_till_done()
    assert task.has_result()
    with pytest.raises(ApiLimitError):
        list(task.get_buffered_stream())


def test_sdk_does_not_retry_a_failed_chunk(
    emulator: EmulatorServer, lb_client: Any, export_task: Any
) -> None:
    emulator.faults.set("chunk", "5xx", next_n=1)
    with pytest.raises(requests.HTTPError):
        list(export_task.get_buffered_stream())
    assert [e.status for e in emulator.request_log if e.request_class == "chunk"] == [503]


def test_slow_task_fault(emulator: EmulatorServer, lb_client: Any) -> None:
    emulator.faults.set("graphql", "slow_task", next_n=1, seconds=60)
    slow = lb_client.get_project(emulator.seed_project_id).export()
    quick = lb_client.get_project(emulator.seed_project_id).export()
    assert slow.status == "IN_PROGRESS" and quick.status == "COMPLETE"
    slow.wait_till_done(timeout_seconds=2)  # the SDK returns silently on timeout
    assert slow.status == "IN_PROGRESS"


def test_reset_clears_faults_log_and_tasks(
    emulator: EmulatorServer, lb_client: Any, chunk_url: str
) -> None:
    assert _get(chunk_url).status_code == 200
    emulator.faults.set("graphql", "5xx", rate=1.0)
    emulator.user_timezone = "Asia/Tokyo"
    emulator.reset()
    assert len(emulator.request_log) == 0 and not emulator.faults.rules
    assert emulator.user_timezone == "UTC"
    assert _get(chunk_url).status_code == 404  # the task is gone


def test_request_log_records_method_path_host_headers(
    emulator: EmulatorServer, chunk_url: str
) -> None:
    emulator.request_log.clear()
    _get(chunk_url)
    (entry,) = emulator.request_log.entries()
    assert entry.method == "GET"
    assert entry.path == chunk_url.removeprefix(emulator.base_url)
    assert entry.host == emulator.base_url.removeprefix("http://")
    assert entry.headers["Host"] == entry.host
    assert entry.request_class == "chunk" and entry.status == 200


def _status_after(client: Any, task_id: str, wait_s: float) -> str:
    time.sleep(wait_s)
    status: str = lb.ExportTask.get_task(client, task_id).status
    return status


def test_slow_then_failed_task(emulator: EmulatorServer, lb_client: Any) -> None:
    # IN_PROGRESS for 3 s from its creation: the SDK's export() call has to read it back
    # inside that window, which 0.5 s missed on a loaded machine (read back as FAILED).
    emulator.faults.set("graphql", "slow_task", next_n=1, seconds=3)
    emulator.faults.set("graphql", "failed_task", next_n=1, message="quota")
    task = lb_client.get_project(emulator.seed_project_id).export()
    assert task.status == "IN_PROGRESS"
    assert _status_after(lb_client, task.uid, 3.1) == "FAILED"


def test_task_faults_can_target_model_run_exports(emulator: EmulatorServer, lb_client: Any) -> None:
    emulator.faults.set(
        "graphql", "failed_task", rate=1.0, match="exportDataRowsInModelRunPyApi", message="no"
    )
    project_task = lb_client.get_project(emulator.seed_project_id).export()
    run_task = lb_client.get_model_run(emulator.seed_model_run_id).export()
    assert project_task.status == "COMPLETE"
    assert run_task.status == "FAILED"


def test_a_broken_source_fails_the_task(
    emulator: EmulatorServer, lb_client: Any, tmp_path: Any
) -> None:
    from labelhaul.emulator.synthetic import SyntheticSpec, build_row

    spec = SyntheticSpec.make(n_rows=2, instances=1, seed=0, width=16, height=12, number=31337)
    export = tmp_path / "export.ndjson"
    export.write_text("".join(json.dumps(build_row(spec, i)) + "\n" for i in range(2)))
    pid = emulator.load_project(export, None)
    export.write_text("this is not json\n" * 400)  # changed under the emulator's feet
    task = lb_client.get_project(pid).export()
    task.wait_till_done()
    assert task.status == "FAILED"
    assert "export failed while preparing rows" in task._task.errors_url


def test_an_emulator_bug_is_a_graphql_error_not_a_retried_500(emulator: EmulatorServer) -> None:
    body = {
        "query": "query GetProjectPyApi($param_0: ID!){project(where: {id: $param_0}){id}}",
        "variables": ["not", "an", "object"],
    }
    r = requests.post(
        emulator.graphql_url,
        json=body,
        headers={"Authorization": f"Bearer {emulator.api_key}"},
        timeout=10,
    )
    assert r.status_code == 200
    (err,) = r.json()["errors"]
    assert err["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    assert "GetProjectPyApi" in err["message"]
