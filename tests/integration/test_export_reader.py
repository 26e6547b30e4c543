"""The export stage against the emulator, spoken to by the unmodified labelbox SDK."""

from __future__ import annotations

import logging
import socket
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import labelbox
import pytest
from labelbox.schema.export_task import ExportTask, StreamType
from labelhaul.config.settings import load_settings

from labelhaul.errors import (
    AuthError,
    ConfigError,
    ExportFailedError,
    ExportTimeoutError,
    FilterError,
    NotFoundError,
    TerminalError,
    TransientError,
)
from labelhaul.export import (
    ExportStreamReader,
    client_from_settings,
    iter_export_lines,
    make_client,
    run_exports,
    start_export,
    wait_for_export,
)
from labelhaul.export_params import DateRange, ExportFilters, ExportParams
from labelhaul.http import HttpClient, RetryPolicy

FAST = RetryPolicy(retries=6, base_s=0.01, cap_s=0.05)


@pytest.fixture
def http() -> Any:
    with HttpClient(policy=FAST, timeout_s=10) as client:
        yield client


def _export(client: Any, wait: bool = True, **kwargs: Any) -> str:
    [job] = start_export(client, policy=FAST, **kwargs)
    if wait:
        wait_for_export(client, job.task_id, timeout_s=30, poll_s=0.05, policy=FAST)
    return job.task_id


def _sdk_rows(client: Any, task_id: str, stream: StreamType = StreamType.RESULT) -> list[Any]:
    task = ExportTask.get_task(client, task_id)
    return [out.json for out in task.get_buffered_stream(stream)]


def _our_rows(client: Any, task_id: str, http: HttpClient, **kwargs: Any) -> list[Any]:
    reader = ExportStreamReader(client, task_id, http=http, graphql_policy=FAST, **kwargs)
    return list(reader.iter_rows())


def _unsigned(rows: list[Any]) -> list[Any]:
    """Rows of an export without what every export changes (signatures, task ids)."""
    import re

    import orjson

    from labelhaul.urls import strip_signing

    out = []
    for row in rows:
        row = orjson.loads(re.sub(rb"/tasks/[^/]+/masks/", b"/tasks/T/masks/", orjson.dumps(row)))
        row["data_row"]["row_data"] = strip_signing(row["data_row"]["row_data"])
        out.append(row)
    return out


def test_reader_matches_sdk_on_the_seed_project(emulator: Any, lb_client: Any, http: Any) -> None:
    task_id = _export(lb_client, project_id=emulator.seed_project_id, params=ExportParams.all())
    ours = _our_rows(lb_client, task_id, http)
    assert ours == _sdk_rows(lb_client, task_id)
    assert len(ours) == 1 and ours[0]["data_row"]["id"]
    with ExportStreamReader(lb_client, task_id, "RESULT") as own_http:
        assert list(own_http.iter_rows()) == ours


def test_reader_matches_sdk_on_the_seed_model_run(emulator: Any, lb_client: Any, http: Any) -> None:
    task_id = _export(lb_client, model_run_id=emulator.seed_model_run_id, params=ExportParams.all())
    ours = _our_rows(lb_client, task_id, http)
    assert ours == _sdk_rows(lb_client, task_id) and len(ours) == 1


@pytest.fixture
def many_chunks(emulator: Any) -> str:
    emulator.chunk_bytes = 4_000  # below one row: every row its own chunk, and more
    return str(emulator.add_synthetic_project(n_rows=40, instances=2, seed=7, width=64, height=48))


def test_reader_matches_sdk_over_many_chunks(
    emulator: Any, lb_client: Any, http: Any, many_chunks: str
) -> None:
    task_id = _export(lb_client, project_id=many_chunks, params=ExportParams.all())
    reader = ExportStreamReader(lb_client, task_id, http=http, graphql_policy=FAST)
    ours = list(reader.iter_rows())
    assert reader.chunks_read >= 20
    assert len(ours) == reader.total_lines == 40
    assert ours == _sdk_rows(lb_client, task_id)


def test_rows_arrive_before_the_whole_export_is_downloaded(
    emulator: Any, lb_client: Any, http: Any, many_chunks: str
) -> None:
    task_id = _export(lb_client, project_id=many_chunks)
    for prefetch, most in ((False, 1), (True, 2)):
        reader = ExportStreamReader(
            lb_client, task_id, http=http, graphql_policy=FAST, prefetch=prefetch
        )
        emulator.request_log.clear()
        lines = reader.iter_lines()
        first = next(lines)
        assert first[0] == 0
        time.sleep(0.2)  # give a prefetching reader time to run ahead if it would
        chunk_gets = [e for e in emulator.request_log.entries() if e.request_class == "chunk"]
        assert 1 <= len(chunk_gets) <= most
        lines.close()


FAULTS = [
    ("chunk", "429", {"rate": 0.3, "retry_after": "0.01"}),
    ("chunk", "5xx", {"rate": 0.3}),
    ("chunk", "reset", {"rate": 0.3}),
    ("chunk", "truncate", {"rate": 0.3}),
    ("graphql", "429", {"next_n": 3}),
    ("graphql", "5xx", {"next_n": 1}),  # the SDK retries this itself, ~1 s backoff
    ("graphql", "reset", {"next_n": 3}),
]


@pytest.mark.parametrize(("request_class", "fault", "knobs"), FAULTS)
def test_reader_survives_faults(
    emulator: Any,
    lb_client: Any,
    http: Any,
    many_chunks: str,
    request_class: str,
    fault: str,
    knobs: dict[str, Any],
) -> None:
    task_id = _export(lb_client, project_id=many_chunks, params=ExportParams(label_details=True))
    clean = _our_rows(lb_client, task_id, http)
    emulator.request_log.clear()
    emulator.faults.set(request_class, fault, **knobs)
    faulty = _our_rows(lb_client, task_id, http)
    emulator.faults.clear()
    assert faulty == clean
    log = emulator.request_log.entries()
    statuses = [e.status for e in log if e.request_class == request_class]
    fired = {
        "429": 429 in statuses,
        "5xx": any(s is not None and s >= 500 for s in statuses),
        "reset": None in statuses,
        # A truncated body is sent with status 200; more GETs than chunks shows the retries.
        "truncate": len(statuses) > 40,
    }[fault]
    assert fired, statuses


def test_graphql_rate_limit_while_starting(
    emulator: Any, lb_client: Any, http: Any, many_chunks: str
) -> None:
    emulator.faults.set("graphql", "429", next_n=2)
    task_id = _export(lb_client, project_id=many_chunks)
    assert len(_our_rows(lb_client, task_id, http)) == 40


def test_resume_from_an_offset_yields_the_tail(
    emulator: Any, lb_client: Any, http: Any, many_chunks: str
) -> None:
    task_id = _export(lb_client, project_id=many_chunks)
    reader = ExportStreamReader(lb_client, task_id, http=http, graphql_policy=FAST)
    lines = list(reader.iter_lines())
    for k in (0, 1, 17, 39):
        tail = ExportStreamReader(
            lb_client, task_id, http=http, graphql_policy=FAST, start_offset=lines[k][0]
        )
        assert list(tail.iter_lines()) == lines[k:]


def test_errors_stream(emulator: Any, lb_client: Any, http: Any) -> None:
    pid = emulator.seed_project_id
    task_id = _export(lb_client, project_id=pid)
    assert ExportStreamReader(lb_client, task_id, "ERRORS", http=http).header() is None
    assert list(ExportStreamReader(lb_client, task_id, "ERRORS", http=http).iter_rows()) == []
    problems = [{"data_row_id": f"dr{i}", "message": "no access"} for i in range(3)]
    emulator.add_error_lines(pid, problems)
    task_id = _export(lb_client, project_id=pid)
    assert ExportTask.get_task(lb_client, task_id).has_errors()
    ours = _our_rows(lb_client, task_id, http, stream="ERRORS")
    assert ours == _sdk_rows(lb_client, task_id, StreamType.ERRORS) == problems


def test_several_exports_stream_as_one(
    emulator: Any, lb_client: Any, http: Any, many_chunks: str
) -> None:
    whole = _our_rows(lb_client, _export(lb_client, project_id=many_chunks), http)
    keys = [r["data_row"]["global_key"] for r in whole]
    # 2,500 keys, most unknown to Labelbox: two exports of at most 2,000 ids each.
    wanted = [f"missing-{i}" for i in range(2_470)] + keys[::-4] + keys[1:3]
    jobs = start_export(
        lb_client, project_id=many_chunks, filters=ExportFilters(global_keys=wanted), policy=FAST
    )
    assert len(jobs) == 2
    for job in jobs:
        wait_for_export(lb_client, job.task_id, timeout_s=30, poll_s=0.05)
    readers = [ExportStreamReader(lb_client, j.task_id, http=http) for j in jobs]
    got = [line for _, line in iter_export_lines(readers)]
    got_keys = sorted(r["data_row"]["global_key"] for r in map(__import__("orjson").loads, got))
    assert got_keys == sorted(set(keys[::-4] + keys[1:3]))


# ------------------------------------------------------------------ waiting


def test_slow_task_is_waited_for_with_progress(
    emulator: Any, lb_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # 3 s: long enough that a loaded machine still finds it unfinished at its first poll.
    emulator.faults.set("graphql", "slow_task", next_n=1, seconds=3.0)
    [job] = start_export(lb_client, project_id=emulator.seed_project_id, policy=FAST)
    with caplog.at_level(logging.INFO, logger="labelhaul.export"):
        state = wait_for_export(lb_client, job.task_id, timeout_s=30, poll_s=0.1)
    assert state.status == "COMPLETE"
    progress = [r.getMessage() for r in caplog.records if "% done" in r.getMessage()]
    assert progress and "IN_PROGRESS" in progress[0]


def test_timeout_raises(emulator: Any, lb_client: Any) -> None:
    emulator.faults.set("graphql", "slow_task", next_n=1, seconds=60.0)
    [job] = start_export(lb_client, project_id=emulator.seed_project_id, policy=FAST)
    with pytest.raises(ExportTimeoutError, match="LABELHAUL_EXPORT_TIMEOUT_S"):
        wait_for_export(lb_client, job.task_id, timeout_s=0.5, poll_s=0.1)


def test_failed_task_raises_with_labelbox_message(emulator: Any, lb_client: Any) -> None:
    emulator.faults.set("graphql", "failed_task", next_n=1, message="Export quota exhausted (E42)")
    [job] = start_export(lb_client, project_id=emulator.seed_project_id, policy=FAST)
    with pytest.raises(ExportFailedError, match=r"Export quota exhausted \(E42\)"):
        wait_for_export(lb_client, job.task_id, timeout_s=30, poll_s=0.1)


# ------------------------------------------------------------------ failing fast


def test_no_api_key(emulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="LABELBOX_API_KEY"):
        make_client(None, emulator.graphql_url)
    monkeypatch.setenv("LABELBOX_ENDPOINT", emulator.graphql_url)
    with pytest.raises(ConfigError, match="LABELBOX_API_KEY"):
        client_from_settings(load_settings())
    monkeypatch.setenv("LABELBOX_API_KEY", emulator.api_key)
    client = client_from_settings(load_settings())
    assert start_export(client, project_id=emulator.seed_project_id, policy=FAST)


def test_wrong_api_key(emulator: Any) -> None:
    key = "wrong-key-0123456789"
    client = make_client(key, emulator.graphql_url, emulator.rest_url)
    with pytest.raises(AuthError, match="LABELBOX_API_KEY") as info:
        start_export(client, project_id=emulator.seed_project_id, policy=FAST)
    assert key not in str(info.value) and emulator.api_key not in str(info.value)


def test_unknown_project(emulator: Any, lb_client: Any) -> None:
    with pytest.raises(NotFoundError, match="cnosuchproject"):
        start_export(lb_client, project_id="cnosuchproject", policy=FAST)


def test_unreachable_endpoint() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = labelbox.Client(api_key="k" * 20, endpoint=f"http://127.0.0.1:{port}/graphql")
    with pytest.raises(TransientError, match="LABELBOX_ENDPOINT") as info:
        start_export(client, project_id="p", policy=FAST)
    assert "k" * 20 not in str(info.value)


def test_bad_filter_fails_before_any_request(emulator: Any, lb_client: Any) -> None:
    emulator.request_log.clear()
    with pytest.raises(FilterError, match="LABELHAUL_NAIVE_DATES_AS_UTC"):
        start_export(
            lb_client,
            project_id=emulator.seed_project_id,
            filters=ExportFilters(last_activity_at=DateRange("2024-01-01 00:00:00")),
        )
    assert len(emulator.request_log) == 0


# ------------------------------------------------------------------ filters


def test_global_keys_filter(emulator: Any, lb_client: Any, http: Any, many_chunks: str) -> None:
    whole = _our_rows(lb_client, _export(lb_client, project_id=many_chunks), http)
    keys = [r["data_row"]["global_key"] for r in whole][5:9]
    rows = _our_rows(
        lb_client,
        _export(lb_client, project_id=many_chunks, filters=ExportFilters(global_keys=keys)),
        http,
    )
    assert [r["data_row"]["global_key"] for r in rows] == keys


def test_workflow_status_filter(emulator: Any, lb_client: Any, http: Any, many_chunks: str) -> None:
    params = ExportParams(project_details=True)
    whole = _our_rows(lb_client, _export(lb_client, project_id=many_chunks, params=params), http)

    def status(row: dict[str, Any]) -> str:
        return str(row["projects"][many_chunks]["project_details"]["workflow_status"])

    present = sorted({status(r) for r in whole})
    assert "DONE" in present
    rows = _our_rows(
        lb_client,
        _export(
            lb_client,
            project_id=many_chunks,
            params=params,
            filters=ExportFilters(workflow_status="Done"),
        ),
        http,
    )
    assert _unsigned(rows) == _unsigned([r for r in whole if status(r) == "DONE"])


@pytest.mark.parametrize("user_tz", ["UTC", "America/New_York", "Asia/Kolkata"])
def test_date_filter_means_the_instant_given(
    emulator: Any, lb_client: Any, http: Any, many_chunks: str, user_tz: str
) -> None:
    params = ExportParams(data_row_details=True)
    whole = _our_rows(lb_client, _export(lb_client, project_id=many_chunks, params=params), http)

    def activity(row: dict[str, Any]) -> datetime:
        return datetime.fromisoformat(row["data_row"]["details"]["last_activity_at"])

    times = sorted({activity(r) for r in whole})
    assert len(times) >= 3
    low, high = times[1], times[-2]
    emulator.user_timezone = user_tz
    # One bound in a third zone (neither UTC nor the user's), one in UTC with "Z".
    rng = DateRange(
        low.astimezone(timezone(timedelta(hours=8))).isoformat(),
        high.astimezone(UTC).isoformat().replace("+00:00", "Z"),
    )
    rows = _our_rows(
        lb_client,
        _export(
            lb_client,
            project_id=many_chunks,
            params=params,
            filters=ExportFilters(last_activity_at=rng),
        ),
        http,
    )
    expected = [r for r in whole if low <= activity(r) <= high]
    assert _unsigned(rows) == _unsigned(expected) and 0 < len(expected) < len(whole)
    sent = [e for e in emulator.request_log.entries() if e.operation == "CurrentUserPyApi"]
    assert sent, "the user's timezone was not asked for"


def test_run_exports_keeps_few_running_and_streams_all(
    emulator: Any, lb_client: Any, http: Any, many_chunks: str
) -> None:
    whole = _our_rows(lb_client, _export(lb_client, project_id=many_chunks), http)
    keys = [r["data_row"]["global_key"] for r in whole]
    # 4,040 keys: three exports (the real keys fall in the first two, the third is empty).
    wanted = [f"missing-{i}" for i in range(4_000)]
    for i, key in enumerate(keys):
        wanted.insert(i * 100, key)
    emulator.request_log.clear()
    jobs = run_exports(
        lb_client,
        project_id=many_chunks,
        filters=ExportFilters(global_keys=wanted),
        timeout_s=30,
        poll_s=0.05,
        max_running=2,
        policy=FAST,
    )

    def started() -> int:
        ops = [e.operation for e in emulator.request_log.entries()]
        return ops.count("exportDataRowsInProjectPyApi")

    got: list[str] = []
    for n, job in enumerate(jobs):
        assert job.parts == 3 and job.part == n
        assert started() == min(n + 2, 3)  # this one and at most one ahead
        reader = ExportStreamReader(lb_client, job.task_id, http=http)
        got += [r["data_row"]["global_key"] for r in reader.iter_rows()]  # type: ignore[index]
    assert sorted(got) == sorted(keys)


def test_start_export_refuses_more_parts_than_labelbox_runs(emulator: Any, lb_client: Any) -> None:
    ids = [f"dr{i}" for i in range(20_001)]
    with pytest.raises(FilterError, match="run_exports"):
        start_export(
            lb_client,
            project_id=emulator.seed_project_id,
            filters=ExportFilters(data_row_ids=ids),
            policy=FAST,
        )


def test_date_bound_in_the_repeated_dst_hour(
    emulator: Any, lb_client: Any, http: Any, tmp_path: Any
) -> None:
    import orjson

    from labelhaul import seed

    project_id = "cdstrepeatedhour0000000001"
    # 05:45Z is 01:45 EDT, 06:15Z is 01:15 EST: the second pass of 01:00-02:00 in New York.
    times = [
        "2024-11-03T05:00:00Z",
        "2024-11-03T05:45:00Z",
        "2024-11-03T06:15:00Z",
        "2024-11-03T06:45:00Z",
    ]
    lines = []
    for i, t in enumerate(times):
        row = seed.sample_project_export()
        row["data_row"]["id"] = f"cdstrow{i:019d}"
        row["data_row"]["global_key"] = f"dst-{i}"
        row["data_row"]["details"]["last_activity_at"] = t
        row["projects"] = {project_id: next(iter(row["projects"].values()))}
        lines.append(orjson.dumps(row))
    path = tmp_path / "dst.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")
    assert emulator.load_project(path) == project_id
    emulator.user_timezone = "America/New_York"
    # 06:30Z is 01:30 EST; as a New York wall clock it would be read as 01:30 EDT (05:30Z).
    rows = _our_rows(
        lb_client,
        _export(
            lb_client,
            project_id=project_id,
            filters=ExportFilters(last_activity_at=DateRange(start="2024-11-03T06:30:00Z")),
        ),
        http,
    )
    assert [r["data_row"]["global_key"] for r in rows] == ["dst-3"]


def test_reading_before_complete_says_to_wait(emulator: Any, lb_client: Any, http: Any) -> None:
    emulator.faults.set("graphql", "slow_task", next_n=1, seconds=60.0)
    task_id = _export(lb_client, wait=False, project_id=emulator.seed_project_id)
    with pytest.raises(TerminalError, match="wait_for_export"):
        ExportStreamReader(lb_client, task_id, http=http).header()


def test_a_stream_shorter_than_its_header_is_a_transient_failure(
    emulator: Any, lb_client: Any, http: Any
) -> None:
    """Issue 13 item 5: fewer lines than the header counts never passes as a whole export."""
    pid = emulator.add_synthetic_project(n_rows=5, instances=1)
    emulator.header_extra_lines = 2  # the header counts 7 lines, the files hold 5
    task_id = _export(lb_client, project_id=pid)
    reader = ExportStreamReader(lb_client, task_id, http=http, graphql_policy=FAST)
    with pytest.raises(TransientError, match="held 5 lines where its header counts 7"):
        list(reader.iter_lines())
