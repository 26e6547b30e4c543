"""Security checks over real sockets: the API key stays secret, auth stays on its host,
the webhook receiver refuses what it must, and server-side encryption reaches every object.

- A canary API key (an emulator of our own that accepts only it) is searched for in
  everything a run leaves behind, for a good run and for failing ones (a 401 from the API,
  a 401 from a mask URL on another origin, masks that all fail): log records (caplog and the
  run logs on the Prefect server), artifacts read back through the Prefect client, every
  stored object (gunzipped), the run records, the exception of a failed run, and the bytes of
  the Prefect server's database.
- Mask URLs on other hosts (and redirects between them) never receive the Authorization
  header; neither does the emulator when it is reached by another origin name.
- The webhook app under uvicorn on a free port.
- `LABELHAUL_S3_SSE=AES256`: every object a sync writes carries it (head_object).
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import json
import logging
import re
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from bench.harness import RecordingServer, Route
from labelhaul.emulator import EmulatorServer

pytestmark = pytest.mark.usefixtures("prefect_harness")


# ------------------------------------------------------------------------------ helpers


@pytest.fixture
def canary(monkeypatch: pytest.MonkeyPatch) -> Iterator[EmulatorServer]:
    """An emulator whose only accepted key is a canary, configured as the Labelbox key."""
    key = f"canary-{uuid.uuid4().hex}"
    emu = EmulatorServer(api_key=key).start()
    monkeypatch.setenv("LABELBOX_API_KEY", key)
    monkeypatch.setenv("LABELBOX_ENDPOINT", emu.graphql_url)
    monkeypatch.setenv("LABELBOX_REST_ENDPOINT", emu.rest_url)
    monkeypatch.setenv("LABELHAUL_MASK_WORKERS", "4")
    monkeypatch.setenv("LABELHAUL_HTTP_RETRIES", "1")
    try:
        yield emu
    finally:
        emu.stop()


def _run(project_id: str, store: str) -> Any:
    from labelhaul.flows.params import SyncMode
    from labelhaul.flows.sync_project import sync_project

    return sync_project(project_id, store=store, mode=SyncMode.full, return_state=True)


def _prefect_texts(flow_run_ids: list[Any]) -> list[str]:
    """Return every run log message and artifact of these flow runs, as text."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        LogFilter,
        LogFilterFlowRunId,
    )

    texts: list[str] = []
    with get_client(sync_client=True) as client:
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=flow_run_ids))
        )
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=flow_run_ids))
        )
        for fr in flow_run_ids:
            run = client.read_flow_run(fr)
            texts.append(run.model_dump_json())
            for tr in client.read_task_runs():
                if tr.flow_run_id == fr:
                    texts.append(tr.model_dump_json())
    texts.extend(log.message for log in logs)
    texts.extend(json.dumps(a.data, default=str) + str(a.description) for a in artifacts)
    assert logs, "no run logs reached the Prefect server"
    return texts


def _store_blobs(root: Path) -> Iterator[tuple[Path, bytes]]:
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            if path.suffix == ".gz":
                data = gzip.decompress(data)
            yield path, data


def _database_bytes() -> bytes:
    """Return the bytes of the Prefect server's SQLite database (and its WAL)."""
    from prefect.settings import PREFECT_SERVER_DATABASE_CONNECTION_URL

    url = str(PREFECT_SERVER_DATABASE_CONNECTION_URL.value())
    path = Path(url.split("///", 1)[1])
    return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())


# ------------------------------------------------------------------- the canary API key


@pytest.mark.parametrize("mask_processes", ["false", "true"], ids=["threads", "processes"])
def test_canary_key_never_leaks_from_good_or_failing_runs(
    canary: EmulatorServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    mask_processes: str,
) -> None:
    from labelhaul.emulator import exports

    # The mask parts run in this process's threads, or in pool processes that get the
    # settings (and so the key) pickled: neither may leak it.
    monkeypatch.setenv("LABELHAUL_MASK_PROCESSES", mask_processes)
    key = canary.api_key
    store = tmp_path / "store"
    states: list[Any] = []
    failures: list[str] = []

    # Instance-mask URLs of the seed row named by another origin of the same server: the
    # client must not send the key there, the emulator answers 401, the run fails.
    alias = canary.base_url.replace("127.0.0.1", "localhost").encode()
    original = exports.serialize_row
    use_alias = threading.Event()

    def serialize(row: dict[str, Any]) -> bytes:
        data = original(row)
        if use_alias.is_set():
            data = data.replace(
                canary.base_url.encode() + b"/api/v1/projects", alias + b"/api/v1/projects"
            )
        return data

    monkeypatch.setattr(exports, "serialize_row", serialize)

    with caplog.at_level(logging.DEBUG):
        # 1. A good run.
        states.append(_run(canary.seed_project_id, str(store)))
        assert states[-1].is_completed(), states[-1].message
        # 2. Every mask request fails (composites 403, instance masks 404): records, not a
        #    failure, but their messages carry URLs.
        canary.faults.set("mask", "5xx", rate=1.0, status=403, match="/masks/")
        canary.faults.set("mask", "5xx", rate=1.0, status=404, match="/annotations/")
        states.append(_run(canary.seed_project_id, str(tmp_path / "store-masks")))
        assert states[-1].is_completed(), states[-1].message
        canary.faults.clear()
        # 3. A 401 on a mask URL of another origin: the run fails.
        canary.faults.set("mask", "5xx", rate=1.0, status=403, match="/masks/")
        use_alias.set()
        states.append(_run(canary.seed_project_id, str(tmp_path / "store-alias")))
        use_alias.clear()
        canary.faults.clear()
        assert states[-1].is_failed()
        # 4. The API refuses the key (an emulator that expects another one): 401, fails.
        other = EmulatorServer(api_key=f"other-{uuid.uuid4().hex}").start()
        try:
            monkeypatch.setenv("LABELBOX_ENDPOINT", other.graphql_url)
            monkeypatch.setenv("LABELBOX_REST_ENDPOINT", other.rest_url)
            states.append(_run(other.seed_project_id, str(tmp_path / "store-401")))
        finally:
            other.stop()
        assert states[-1].is_failed()

    for state in states[2:]:
        exc = state.result(raise_on_failure=False)
        assert isinstance(exc, BaseException)
        failures.append(repr(exc) + str(state.message))
        failures.append("".join(traceback.format_exception(exc)))
    assert "401" in failures[0] or "auth" in failures[0].lower(), failures[0]

    # The alias run was refused by the emulator for lack of a key: it never got one.
    alias_host = alias.decode().split("://", 1)[1]
    alias_reqs = [e for e in canary.request_log if e.host == alias_host]
    assert alias_reqs and all(
        "authorization" not in {h.lower() for h in e.headers} for e in alias_reqs
    )

    assert key not in caplog.text
    for text in failures:
        assert key not in text
    flow_run_ids = [s.state_details.flow_run_id for s in states]
    for text in _prefect_texts(flow_run_ids):
        assert key not in text
    stored = 0
    for path, data in _store_blobs(tmp_path):
        stored += 1
        assert key.encode() not in data, path
    runs = [p for p in tmp_path.rglob("runs/*.json")]
    assert len(runs) == 4, runs  # failing runs leave a record too
    for p in runs:
        assert key not in p.read_text()
    assert stored > 20
    assert key.encode() not in _database_bytes()


def _log_table_messages() -> list[str]:
    """Return every message of the Prefect server's `log` table (read with sqlite3)."""
    import sqlite3

    from prefect.settings import PREFECT_SERVER_DATABASE_CONNECTION_URL

    url = str(PREFECT_SERVER_DATABASE_CONNECTION_URL.value())
    with sqlite3.connect(url.split("///", 1)[1]) as db:
        return [str(row[0]) for row in db.execute("SELECT message FROM log")]


def test_canary_key_with_a_trailing_newline_never_leaks_on_any_failure_path(
    canary: EmulatorServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """How keys from a secret file or a Kubernetes secret arrive: `key\\n`.

    The SDK put it in a header as is; `requests` refused the header quoting it whole, the
    SDK's `lbox.request_client` logger printed that, and a chained traceback stored it in
    Prefect's `log` table. Now: a good run, then every failure path (bad store, GraphQL
    5xx, a 401 from the API); the key is in no log, no output, no table, no object.
    """
    key = canary.api_key
    monkeypatch.setenv("LABELBOX_API_KEY", key + "\n")
    monkeypatch.setenv("LABELHAUL_GRAPHQL_DEADLINE_S", "1")
    states: list[Any] = []
    with caplog.at_level(logging.DEBUG):
        states.append(_run(canary.seed_project_id, str(tmp_path / "store")))
        assert states[-1].is_completed(), states[-1].message
        # A store that cannot be created: a regular file stands where its directory goes.
        (tmp_path / "blocker").write_text("not a directory")
        states.append(_run(canary.seed_project_id, str(tmp_path / "blocker" / "store")))
        assert states[-1].is_failed()
        # Every GraphQL call answers 500.
        canary.faults.set("graphql", "5xx", rate=1.0, status=500)
        states.append(_run(canary.seed_project_id, str(tmp_path / "store-5xx")))
        canary.faults.clear()
        assert states[-1].is_failed()
        # The API refuses the key.
        other = EmulatorServer(api_key=f"other-{uuid.uuid4().hex}").start()
        try:
            monkeypatch.setenv("LABELBOX_ENDPOINT", other.graphql_url)
            states.append(_run(other.seed_project_id, str(tmp_path / "store-401")))
        finally:
            other.stop()
        assert states[-1].is_failed()
    out, err = capfd.readouterr()
    texts = [caplog.text, out, err]
    for state in states[1:]:
        exc = state.result(raise_on_failure=False)
        assert isinstance(exc, BaseException)
        texts.append(repr(exc) + str(state.message))
        texts.append("".join(traceback.format_exception(exc)))
    texts.extend(_prefect_texts([s.state_details.flow_run_id for s in states]))
    messages = _log_table_messages()
    assert messages, "nothing reached Prefect's log table"
    texts.extend(messages)
    for text in texts:
        assert key not in text
    for path, data in _store_blobs(tmp_path):
        assert key.encode() not in data, path
    assert key.encode() not in _database_bytes()
    # The good run worked with the stripped key: no header error anywhere.
    assert not any("Invalid leading whitespace" in t or "return character" in t for t in texts)


def test_doctor_with_a_trailing_newline_key_is_quiet_and_right(
    canary: EmulatorServer, tmp_path: Path
) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_URL")}
    env.update(LABELBOX_API_KEY=canary.api_key + "\n", LABELHAUL_STORE=str(tmp_path / "s"))
    proc = subprocess.run(
        [sys.executable, "-m", "labelhaul", "doctor", "--project-id", canary.seed_project_id],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    output = proc.stdout + proc.stderr
    assert canary.api_key not in output
    assert "network" not in output.lower() and "Cannot reach" not in output, output
    assert "OK    labelbox endpoint" in output, output
    assert f"OK    project {canary.seed_project_id}" in output, output

    # A key with whitespace inside is refused by name, without showing it.
    env["LABELBOX_API_KEY"] = canary.api_key[:10] + " " + canary.api_key[10:]
    proc = subprocess.run(
        [sys.executable, "-m", "labelhaul", "doctor"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1
    assert "FAIL  labelbox api key: LABELBOX_API_KEY has whitespace" in output, output
    assert canary.api_key[10:] not in output and canary.api_key[:10] not in output


# ------------------------------------------------------- Authorization stays on its host


def test_authorization_reaches_only_the_configured_host(
    canary: EmulatorServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Composites on a foreign host that redirects to a third host: no key on either."""
    from labelhaul.emulator import exports

    pid = canary.add_synthetic_project(n_rows=3, instances=2)
    with RecordingServer() as far, RecordingServer() as near:
        original = exports.serialize_row
        served: dict[str, bytes] = {}

        def serialize(row: dict[str, Any]) -> bytes:
            # Composite URLs move to `near`, which redirects to `far`, which serves the PNG.
            # Each export names its own task in composite URLs: the routes use one name.
            data = re.sub(rb"/api/v1/tasks/[^/]+/masks/", b"/api/v1/tasks/T/masks/", original(row))
            prefix = canary.base_url.encode() + b"/api/v1/tasks/"
            return data.replace(prefix, near.url.encode() + b"/api/v1/tasks/")

        monkeypatch.setattr(exports, "serialize_row", serialize)

        # Serve each composite the emulator would serve, through near -> far.
        from labelhaul.emulator.sources import composite_id_of, iter_mask_objects

        src = canary._source(pid)
        for i in range(src.count()):
            for obj in iter_mask_objects(src.row(i)):
                url = obj["composite_mask"]["url"]
                cid = composite_id_of(url)
                assert cid is not None
                png = canary.composite_png(cid)
                assert png is not None
                path = f"/api/v1/tasks/T/masks/{cid}/index/1"
                served[path] = png
                near.routes[path] = Route(302, b"", {"Location": f"{far.url}/moved{path}"})
                far.routes[f"/moved{path}"] = Route(200, png, {"Content-Type": "image/png"})

        state = _run(pid, str(tmp_path / "store"))
        assert state.is_completed(), state.message
        result = state.result()
        assert result["errors_by_kind"] == {}
        for server in (near, far):
            assert server.requests, "the foreign host was never asked"
            for req in server.requests:
                assert "authorization" not in {h.lower() for h in req.headers}, req
        assert {r.path for r in far.requests} >= {f"/moved{p}" for p in served}

    # Every request that carried the key went to the configured host, and only there.
    configured = canary.base_url.split("://", 1)[1]
    with_auth = [
        e for e in canary.request_log if any(h.lower() == "authorization" for h in e.headers)
    ]
    assert with_auth and {e.host for e in with_auth} == {configured}


# ---------------------------------------------------------------- webhook over a socket


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def webhook_server(caplog: pytest.LogCaptureFixture) -> Iterator[tuple[str, str, list[Any]]]:
    """Serve the webhook app with uvicorn on a free port; yield (url, secret, events)."""
    import uvicorn
    from labelhaul.deployments.webhook import create_app

    secret = f"whsec-{uuid.uuid4().hex}"
    events: list[Any] = []
    app = create_app(secret, emit=lambda **kw: events.append(kw), max_body_bytes=4096)
    port = _free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", secret, events
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_webhook_refusals_over_a_real_socket(
    webhook_server: tuple[str, str, list[Any]], caplog: pytest.LogCaptureFixture
) -> None:
    base, secret, events = webhook_server
    url = f"{base}/webhook"
    body = json.dumps(
        {"id": "clabel000000000000000001", "projectId": "cproject0000000000000001"}
    ).encode()
    good = "sha1=" + hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()
    headers = {"X-Labelbox-Event": "LABEL_CREATED", "Content-Type": "application/json"}

    def post(data: bytes, **extra: str) -> requests.Response:
        return requests.post(url, data=data, headers={**headers, **extra}, timeout=10)

    with caplog.at_level(logging.DEBUG):
        assert post(body).status_code == 401  # no signature
        wrong = "sha1=" + hmac.new(b"not-the-secret", body, hashlib.sha1).hexdigest()
        assert post(body, **{"X-Hub-Signature": wrong, "X-Labelbox-Id": "d1"}).status_code == 401
        sha256 = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        assert post(body, **{"X-Hub-Signature": sha256, "X-Labelbox-Id": "d2"}).status_code == 401
        # The right signature over a different body is a wrong signature.
        assert post(body + b" ", **{"X-Hub-Signature": good}).status_code == 401
        assert events == []

        first = post(body, **{"X-Hub-Signature": good, "X-Labelbox-Id": "delivery-1"})
        assert first.status_code == 200 and first.json()["status"] == "accepted"
        replay = post(body, **{"X-Hub-Signature": good, "X-Labelbox-Id": "delivery-1"})
        assert replay.status_code == 200 and replay.json()["status"] == "duplicate"
        assert len(events) == 1
        assert events[0]["resource"] == {
            "prefect.resource.id": "labelbox.project.cproject0000000000000001"
        }

        big = json.dumps({"projectId": "cproject0000000000000001", "pad": "x" * 10_000}).encode()
        big_sig = "sha1=" + hmac.new(secret.encode(), big, hashlib.sha1).hexdigest()
        too_big = post(big, **{"X-Hub-Signature": big_sig, "X-Labelbox-Id": "delivery-2"})
        assert too_big.status_code == 413
        # The same without a Content-Length (chunked): the cap holds while reading.
        chunked = requests.post(
            url,
            data=iter([big[:3000], big[3000:]]),
            headers={**headers, "X-Hub-Signature": big_sig, "X-Labelbox-Id": "delivery-3"},
            timeout=10,
        )
        assert chunked.status_code == 413
        assert len(events) == 1

    responses = [first.text, replay.text, too_big.text, chunked.text]
    for text in [caplog.text, *responses]:
        assert secret not in text
        assert good.split("=", 1)[1] not in text


# ------------------------------------------------------------- server-side encryption


def test_every_object_a_sync_writes_carries_sse(
    canary: EmulatorServer,
    monkeypatch: pytest.MonkeyPatch,
    moto_server: str,
    s3_client: Any,
    s3_bucket: str,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server)
    monkeypatch.setenv("LABELHAUL_S3_SSE", "AES256")
    pid = canary.add_synthetic_project(n_rows=4, instances=3)
    state = _run(pid, f"s3://{s3_bucket}/store")
    assert state.is_completed(), state.message
    keys = [
        obj["Key"]
        for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=s3_bucket)
        for obj in page.get("Contents", [])
    ]
    kinds = {k.split("/")[2] for k in keys}
    assert {"blobs", "tables", "versions", "runs", "_latest.json"} <= kinds, kinds
    for key in keys:
        head = s3_client.head_object(Bucket=s3_bucket, Key=key)
        assert head.get("ServerSideEncryption") == "AES256", key
