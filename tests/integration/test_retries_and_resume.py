"""Retries in one place, a stage that resumes, and exports past Labelbox's limits (issue 15.3).

Against the emulator over HTTP (its fault knobs count the attempts) and, for the stage and
the id limits, through the real sync flow under Prefect's engine.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path
from typing import Any

import pytest

from labelhaul.emulator import EmulatorServer
from labelhaul.errors import LabelboxUnavailableError, TerminalError, TransientError
from labelhaul.export import ExportStreamReader, StagedStream, make_client, start_export
from labelhaul.export_params import ExportFilters
from labelhaul.http import HttpClient
from labelhaul.reader import open_dataset
from labelhaul.retry import RetryPolicy

FAST = RetryPolicy(retries=6, base_s=0.001, cap_s=0.01)


@pytest.fixture
def client(emulator: EmulatorServer) -> Any:
    return make_client(
        emulator.api_key, emulator.graphql_url, emulator.rest_url, graphql_policy=FAST
    )


def _export(client: Any, emulator: EmulatorServer, pid: str) -> str:
    (job,) = start_export(client, project_id=pid)
    return job.task_id


def _chunk_gets(emulator: EmulatorServer, index: int | None = None) -> list[Any]:
    return [
        e
        for e in emulator.request_log.entries()
        if e.request_class == "chunk"
        and "/RESULT/" in e.path
        and (index is None or e.path.split("?")[0].endswith(f"/RESULT/{index}"))
    ]


def _offsets_located(emulator: EmulatorServer) -> list[int]:
    return [
        int((e.variables or {})["offset"])
        for e in emulator.request_log.entries()
        if e.operation == "GetExportFileFromOffsetPyApi"
        and (e.variables or {}).get("streamType") == "RESULT"
    ]


# --------------------------------------------------------------------------- one layer


def test_a_chunk_failing_n_times_is_fetched_n_plus_one_times(emulator: EmulatorServer) -> None:
    """The GET is the only layer retrying a chunk: N transient failures, N + 1 GETs."""
    emulator.chunk_bytes = 2048
    pid = emulator.add_synthetic_project(n_rows=20, instances=1)
    client = make_client(emulator.api_key, emulator.graphql_url, graphql_policy=FAST)
    task_id = _export(client, emulator, pid)
    emulator.request_log.clear()
    emulator.faults.set("chunk", "5xx", next_n=4, status=503, match="/RESULT/2")
    with HttpClient(policy=FAST) as http:
        rows = list(ExportStreamReader(client, task_id, http=http, prefetch=False).iter_rows())
    assert len(rows) == 20
    assert len(_chunk_gets(emulator, 2)) == 5
    assert len(_chunk_gets(emulator, 1)) == 1
    located = _offsets_located(emulator)
    assert len(located) == len(set(located)), "a chunk was located twice"


def test_a_chunk_failing_past_the_policy_costs_its_attempts_once(
    emulator: EmulatorServer,
) -> None:
    """More failures than the policy allows: exactly `attempts` GETs, then the stage fails."""
    emulator.chunk_bytes = 2048
    pid = emulator.add_synthetic_project(n_rows=20, instances=1)
    client = make_client(emulator.api_key, emulator.graphql_url, graphql_policy=FAST)
    task_id = _export(client, emulator, pid)
    emulator.request_log.clear()
    emulator.faults.set("chunk", "5xx", rate=1.0, status=503, match="/RESULT/1")
    policy = RetryPolicy(retries=3, base_s=0.001, cap_s=0.01)
    with HttpClient(policy=policy) as http, pytest.raises(TransientError, match="4 attempts"):
        list(ExportStreamReader(client, task_id, http=http, prefetch=False).iter_lines())
    assert len(_chunk_gets(emulator, 1)) == 4  # not 4 x 7 x 7


def test_a_refused_chunk_url_is_asked_for_again_once(emulator: EmulatorServer) -> None:
    """A 404 (an expired signed URL) gets one fresh URL, not seven rounds of GraphQL + GET."""
    emulator.chunk_bytes = 2048
    pid = emulator.add_synthetic_project(n_rows=20, instances=1)
    client = make_client(emulator.api_key, emulator.graphql_url, graphql_policy=FAST)
    task_id = _export(client, emulator, pid)
    emulator.request_log.clear()
    emulator.faults.set("chunk", "5xx", rate=1.0, status=404, match="/RESULT/1")
    with HttpClient(policy=FAST) as http, pytest.raises(TransientError, match="HTTP 404"):
        list(ExportStreamReader(client, task_id, http=http, prefetch=False).iter_lines())
    assert len(_chunk_gets(emulator, 1)) == 2
    assert _offsets_located(emulator).count(_offsets_located(emulator)[-1]) == 2

    emulator.faults.clear()
    emulator.faults.set("chunk", "5xx", next_n=1, status=404, match="/RESULT/1")
    with HttpClient(policy=FAST) as http:
        assert len(list(ExportStreamReader(client, task_id, http=http).iter_lines())) == 20


def test_graphql_calls_are_retried_by_the_policy_alone(emulator: EmulatorServer) -> None:
    """N 503s on a GraphQL call: N + 1 requests; past the policy, its attempts and the fix."""
    pid = emulator.add_synthetic_project(n_rows=3, instances=1)
    client = make_client(emulator.api_key, emulator.graphql_url, graphql_policy=FAST)
    task_id = _export(client, emulator, pid)

    def header_posts() -> int:
        ops = [e.operation for e in emulator.request_log.entries()]
        return ops.count("GetExportMetadataHeaderPyApi")

    emulator.request_log.clear()
    emulator.faults.set("graphql", "5xx", next_n=3, status=503, match="MetadataHeader")
    assert ExportStreamReader(client, task_id).total_lines == 3
    assert header_posts() == 4

    emulator.request_log.clear()
    emulator.faults.set("graphql", "5xx", rate=1.0, status=503, match="MetadataHeader")
    with pytest.raises(LabelboxUnavailableError, match="7 attempt"):
        ExportStreamReader(client, task_id).header()
    assert header_posts() == 7


def test_the_policy_comes_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from labelhaul.config import load_settings

    monkeypatch.setenv("LABELHAUL_HTTP_RETRIES", "2")
    monkeypatch.setenv("LABELHAUL_HTTP_DEADLINE_S", "9")
    monkeypatch.setenv("LABELHAUL_GRAPHQL_RETRIES", "4")
    monkeypatch.setenv("LABELHAUL_GRAPHQL_DEADLINE_S", "11")
    settings = load_settings()
    assert settings.http_retry_policy().attempts == 3
    assert settings.http_retry_policy().deadline_s == 9
    assert settings.graphql_retry_policy() == RetryPolicy(
        retries=4, base_s=0.5, cap_s=30.0, deadline_s=11
    )


# --------------------------------------------------------------------------- resume


def test_a_staged_stream_cut_short_resumes_at_its_offset_byte_identical(
    emulator: EmulatorServer, tmp_path: Path
) -> None:
    """Cut once mid-way: the first read fails short, the next goes on from the byte reached."""
    emulator.chunk_bytes = 2048
    pid = emulator.add_synthetic_project(n_rows=30, instances=1)
    client = make_client(emulator.api_key, emulator.graphql_url, graphql_policy=FAST)
    emulator.cut_stream_once = 3 * 2048
    task_id = _export(client, emulator, pid)
    journal = tmp_path / "RESULT.ndjson"
    with HttpClient(policy=FAST) as http:
        first = StagedStream(client, task_id, "RESULT", journal, http=http)
        with pytest.raises(TransientError, match="the stream is incomplete"):
            list(first.iter_lines())
        reached = journal.stat().st_size
        first_located = len(_offsets_located(emulator))

        second = StagedStream(client, task_id, "RESULT", journal, http=http)
        assert second.resumed_at == reached and 0 < reached < second.total_size
        lines = list(second.iter_lines())
        resumed = _offsets_located(emulator)[first_located:]
        uninterrupted = ExportStreamReader(client, task_id, http=http)
        whole = list(uninterrupted.iter_lines())
        whole_bytes = b"".join(b for _, b in uninterrupted.iter_chunks())
    assert resumed[0] == reached  # the second attempt opened the stream there
    assert _offsets_located(emulator)[: first_located + len(resumed)].count(0) == 1
    assert len(lines) == 30 and lines == whole
    # The staged file is the stream as served, byte for byte.
    assert journal.read_bytes() == whole_bytes


def _gzip_lines(lines: list[bytes], where: Path) -> bytes:
    """Return the raw export an uninterrupted stage writes for `lines` (pipeline.stage_export)."""
    path = where / "raw-export.ndjson.gz"  # the name is in the gzip header
    with gzip.GzipFile(path, "wb", compresslevel=6, mtime=0) as gz:
        for line in lines:
            gz.write(line + b"\n")
    return path.read_bytes()


@pytest.mark.usefixtures("prefect_harness")
def test_a_stage_retry_resumes_from_the_staged_offset(
    lb_env: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk failing past its retries fails the stage; the retry goes on from that chunk.

    Before, the retry started the stream over from byte 0 (chunk 0 fetched twice).
    """
    from labelhaul.flows.params import SyncMode
    from labelhaul.flows.sync_project import sync_project

    monkeypatch.setenv("LABELHAUL_HTTP_RETRIES", "1")
    lb_env.chunk_bytes = 2048
    pid = lb_env.add_synthetic_project(n_rows=30, instances=1)
    lb_env.faults.set("chunk", "5xx", next_n=3, status=503, match="/RESULT/3")
    state = sync_project(pid, store=str(tmp_path / "store"), mode=SyncMode.full, return_state=True)
    assert state.is_completed(), state.message
    # Two GETs (1 + 1 retry) in the first attempt, two in the second: N + 1 in all.
    assert len(_chunk_gets(lb_env, 3)) == 4
    for index in (0, 1, 2, 4):
        assert len(_chunk_gets(lb_env, index)) == 1, index
    assert _offsets_located(lb_env).count(0) == 1
    with open_dataset(str(tmp_path / "store"), pid) as ds:
        assert len(ds.table("data_rows")) == 30


@pytest.mark.usefixtures("prefect_harness")
def test_a_stream_shorter_than_its_header_is_retried_from_the_offset_reached(
    lb_env: EmulatorServer, tmp_path: Path
) -> None:
    """Issue 13 item 5: cut mid-way once, the stage fails, resumes there, lands every row.

    The landed raw export is byte-identical to the one an uninterrupted stage writes.
    """
    from labelhaul.flows.params import SyncMode
    from labelhaul.flows.sync_project import sync_project

    lb_env.chunk_bytes = 2048
    pid = lb_env.add_synthetic_project(n_rows=30, instances=1)
    lb_env.cut_stream_once = 2 * 2048
    store = str(tmp_path / "store")
    state = sync_project(pid, store=store, mode=SyncMode.full, return_state=True)
    assert state.is_completed(), state.message
    headers = [
        e
        for e in lb_env.request_log.entries()
        if e.operation == "GetExportMetadataHeaderPyApi"
        and (e.variables or {}).get("streamType") == "RESULT"
    ]
    assert len(headers) == 2  # the short attempt and the resumed one
    located = _offsets_located(lb_env)
    assert located.count(0) == 1 and len(located) == len(set(located)), located
    with open_dataset(store, pid) as ds:
        assert len(ds.table("data_rows")) == 30
        manifest = ds.manifest()
    (raw,) = [f for f in manifest["files"] if f["role"] == "raw" and f["name"] == "export"]
    task_id = manifest["export_task_ids"][0] if "export_task_ids" in manifest else None
    if task_id is None:
        (task_id,) = {e.path.split("/")[2] for e in _chunk_gets(lb_env)}
    client = make_client(lb_env.api_key, lb_env.graphql_url, graphql_policy=FAST)
    with HttpClient(policy=FAST) as http:
        lines = [line for _, line in ExportStreamReader(client, task_id, http=http).iter_lines()]
    assert len(lines) == 30
    assert raw["sha256"] == hashlib.sha256(_gzip_lines(lines, tmp_path)).hexdigest()


# --------------------------------------------------------------------------- limits


def test_the_emulator_refuses_an_eleventh_running_export(emulator: EmulatorServer) -> None:
    """Labelbox runs at most 10 exports per project: one more is refused until one ends."""
    emulator.task_seconds = 30.0
    client = make_client(emulator.api_key, emulator.graphql_url, graphql_policy=FAST)
    pid = emulator.seed_project_id
    for _ in range(10):
        start_export(client, project_id=pid)
    with pytest.raises(TerminalError, match="10 exports in progress"):
        start_export(client, project_id=pid)
    assert emulator.peak_running_exports[pid] == 10


def test_labelbox_limits_are_the_defaults() -> None:
    from labelhaul import export, export_params
    from labelhaul.emulator import exports as emulated

    assert export_params.MAX_IDS_PER_EXPORT == emulated.MAX_IDS == 2_000
    assert export.MAX_RUNNING_EXPORTS == emulated.MAX_RUNNING_EXPORTS == 10
    assert len(export_params.build_filter_dicts(ExportFilters(data_row_ids=["a"] * 1))) == 1
    ids = [f"dr{i}" for i in range(20_001)]
    assert len(export_params.build_filter_dicts(ExportFilters(data_row_ids=ids))) == 11


@pytest.mark.usefixtures("prefect_harness")
def test_more_ids_than_ten_exports_hold_run_ten_at_a_time(
    lb_env: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over 10 x the id limit (20,000 ids at Labelbox's): the sync runs them in waves.

    The limit is lowered to 3 ids per export in both the code and the emulator, so 35 ids
    need 12 exports; each stays IN_PROGRESS 5 s, so starting all 12 at once would be refused.
    """
    from labelhaul.flows.params import SyncMode
    from labelhaul.flows.sync_project import sync_project

    from labelhaul import export_params

    monkeypatch.setattr(export_params, "MAX_IDS_PER_EXPORT", 3)
    lb_env.max_ids_per_export = 3
    lb_env.task_seconds = 5.0
    monkeypatch.setenv("LABELHAUL_EXPORT_POLL_S", "0.1")
    pid = lb_env.add_synthetic_project(n_rows=36, instances=1)
    spec = lb_env.synthetic_spec(pid)
    ids = [spec.data_row_id(i) for i in range(35)]
    state = sync_project(
        pid,
        store=str(tmp_path / "store"),
        mode=SyncMode.full,
        data_row_ids=ids,
        return_state=True,
    )
    assert state.is_completed(), state.message
    started = [
        e for e in lb_env.request_log.entries() if e.operation == "exportDataRowsInProjectPyApi"
    ]
    assert len(started) == 12 and all(e.status == 200 for e in started)
    # Never more than 10 at once (the emulator refuses an 11th), and more than one: they
    # overlap. Exactly 10 is not guaranteed: on a loaded machine the first exports can
    # finish their 5 s before the tenth starts.
    assert 1 < lb_env.peak_running_exports[pid] <= 10
    with open_dataset(str(tmp_path / "store"), pid) as ds:
        assert sorted(ds.table("data_rows")["data_row_id"]) == sorted(ids)


@pytest.mark.usefixtures("prefect_harness")
def test_a_flow_retry_starts_a_new_export_even_with_results_persisted(
    lb_env: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flow run's retry exports again; no task answers from Prefect's cache.

    With `PREFECT_RESULTS_PERSIST_BY_DEFAULT` on (a common Prefect setting) our tasks had
    Prefect's default cache policy (inputs + source + run id): the retry of a flow run
    took `read-parent`, `start-export` and `wait-export` from the first attempt, landing
    the first attempt's export under a watermark taken at the retry (changes in between
    never exported) from signed URLs that may have expired.
    """
    from labelhaul.flows.params import SyncMode
    from labelhaul.flows.sync_project import sync_project
    from prefect.settings import (
        PREFECT_LOCAL_STORAGE_PATH,
        PREFECT_RESULTS_PERSIST_BY_DEFAULT,
        temporary_settings,
    )

    monkeypatch.setenv("LABELHAUL_HTTP_RETRIES", "1")
    pid = lb_env.add_synthetic_project(n_rows=5, instances=1)
    # Every mask GET of the first attempt fails (composite and instance mask, each retried
    # once): it ends IncompleteRunError after its export; the retry finds the masks.
    lb_env.faults.set("mask", "5xx", next_n=20, status=503)
    results = tmp_path / "results"
    with temporary_settings(
        {PREFECT_RESULTS_PERSIST_BY_DEFAULT: True, PREFECT_LOCAL_STORAGE_PATH: results}
    ):
        state = sync_project.with_options(retries=1, retry_delay_seconds=0)(
            pid, store=str(tmp_path / "store"), mode=SyncMode.full, return_state=True
        )
    assert state.is_completed(), state.message
    exports = [
        e for e in lb_env.request_log.entries() if e.operation == "exportDataRowsInProjectPyApi"
    ]
    assert len(exports) == 2  # one per attempt
    with open_dataset(str(tmp_path / "store"), pid) as ds:
        assert ds.table("annotations")["mask_sha256"].notna().sum() == 5


def test_sdk_calls_name_their_method_so_the_sdk_walks_no_stack(
    emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each SDK request carries the `X-SDK-Method` the SDK would have sent, without its walk.

    Unnamed, the SDK finds the name by `inspect.stack()` on every request: 51 walks, 383 ms
    in a 1,000-label sync (issue 17). Its pagination (created_tasks) names itself by a walk
    whatever we set: not counted here (`labelbox.pagination` holds its own reference).
    """
    import lbox.request_client

    from labelhaul.doctor import check_project
    from labelhaul.export import fetch_user_timezone, open_project, wait_for_export

    walks: list[int] = []
    real_walk = lbox.request_client.call_info_as_str

    def counted() -> str:
        walks.append(1)
        return str(real_walk())

    monkeypatch.setattr(lbox.request_client, "call_info_as_str", counted)
    # IN_PROGRESS at the first read, so the wait polls (Task:refresh). 0.3 s was too short
    # on a loaded CI machine: its first read came after the task completed.
    emulator.task_seconds = 2.0
    pid = emulator.add_synthetic_project(n_rows=3, instances=1)
    client = make_client(
        emulator.api_key, emulator.graphql_url, emulator.rest_url, graphql_policy=FAST
    )
    emulator.request_log.clear()
    assert check_project(client, pid).ok
    open_project(client, pid)
    fetch_user_timezone(client)
    task_id = _export(client, emulator, pid)
    wait_for_export(client, task_id, timeout_s=30, poll_s=0.05)
    assert ExportStreamReader(client, task_id).total_lines == 3
    sent = {
        (e.operation, e.headers.get("X-SDK-Method"))
        for e in emulator.request_log.entries()
        if e.path == "/graphql"
    }
    assert walks == []
    assert {
        ("GetProjectPyApi", "Client:get_project"),
        ("exportDataRowsInProjectPyApi", "Project:export"),
        ("GetUserCreatedTasksPyApi", ":get_task"),
        ("GetUserCreatedTasksPyApi", "Task:refresh"),
        ("GetExportMetadataHeaderPyApi", "Client:execute"),
    } <= sent, sent
    assert all(method for _, method in sent), sent
