"""`labelhaul doctor` against the emulator, moto's S3 server and Prefect's test server."""

from __future__ import annotations

import os
import socket
from typing import Any

import pytest

from labelhaul.cli import main
from labelhaul.doctor import probe_store
from labelhaul.emulator import EmulatorServer
from labelhaul.storage import S3ObjectStore, S3Options


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def env(
    emulator: EmulatorServer, moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> EmulatorServer:
    monkeypatch.setenv("LABELBOX_API_KEY", emulator.api_key)
    monkeypatch.setenv("LABELBOX_ENDPOINT", emulator.graphql_url)
    monkeypatch.setenv("LABELBOX_REST_ENDPOINT", emulator.rest_url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server)
    return emulator


def _doctor(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, str], str]:
    """Run `labelhaul doctor`; return (exit code, {check name: its line}, all output)."""
    code = main(["doctor", *args])
    captured = capsys.readouterr()
    lines = {}
    for line in captured.out.splitlines():
        if line.startswith(("OK", "FAIL")):
            name = line.split(None, 1)[1].split(":", 1)[0]
            lines[name] = line
    return code, lines, captured.out + captured.err


@pytest.mark.usefixtures("prefect_harness")
def test_all_checks_pass_against_the_emulator_moto_and_prefect(
    env: EmulatorServer,
    s3_store_uri: str,
    s3_client: Any,
    s3_bucket: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, lines, out = _doctor(capsys, "--project-id", env.seed_project_id, "--store", s3_store_uri)
    assert code == 0, out
    assert set(lines) == {
        "labelbox api key",
        "labelbox endpoint",
        f"project {env.seed_project_id}",
        "store",
        "prefect api",
        "mask codec",
    }
    assert all(line.startswith("OK") for line in lines.values()), out
    assert "C core" in lines["mask codec"]
    assert "healthy" in lines["prefect api"]
    assert "create-only" in lines["store"]
    assert env.api_key not in out
    # The probe cleaned up after itself.
    assert s3_client.list_objects_v2(Bucket=s3_bucket).get("KeyCount", 0) == 0


@pytest.mark.parametrize(
    "case",
    [
        "no key",
        "wrong key",
        "unknown project",
        "bucket missing",
        "labelbox unreachable",
        "s3 unreachable",
        "prefect unreachable",
    ],
)
def test_each_failure_is_named_with_its_fix_and_never_shows_the_key(
    case: str,
    env: EmulatorServer,
    s3_store_uri: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["--project-id", env.seed_project_id, "--store", s3_store_uri]
    failing, expect = {
        "no key": ("labelbox api key", "LABELBOX_API_KEY is not set"),
        "wrong key": ("labelbox endpoint", "refused the API key"),
        "unknown project": ("project cnosuchproject0000000000000", "not found"),
        "bucket missing": ("store", "does not exist"),
        "labelbox unreachable": ("labelbox endpoint", "Cannot reach Labelbox"),
        "s3 unreachable": ("store", "Cannot reach the S3 endpoint"),
        "prefect unreachable": ("prefect api", "not healthy"),
    }[case]
    if case == "no key":
        monkeypatch.delenv("LABELBOX_API_KEY")
    elif case == "wrong key":
        monkeypatch.setenv("LABELBOX_API_KEY", env.api_key + "-revoked")
    elif case == "unknown project":
        args[1] = "cnosuchproject0000000000000"
    elif case == "bucket missing":
        args[3] = "s3://lh-no-such-bucket/store"
    elif case == "labelbox unreachable":
        monkeypatch.setenv("LABELBOX_ENDPOINT", f"http://127.0.0.1:{_closed_port()}/graphql")
    elif case == "s3 unreachable":
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{_closed_port()}")
    if case == "prefect unreachable":
        from prefect.settings import PREFECT_API_URL, temporary_settings

        url = f"http://127.0.0.1:{_closed_port()}/api"
        with temporary_settings({PREFECT_API_URL: url}):
            code, lines, out = _doctor(capsys, *args)
    else:
        code, lines, out = _doctor(capsys, *args)
    assert code == 1, out
    assert lines[failing].startswith("FAIL"), out
    assert expect in lines[failing], out
    failed = [name for name, line in lines.items() if line.startswith("FAIL")]
    if case in ("wrong key", "labelbox unreachable"):
        # The project check cannot run without a working endpoint: it says so.
        assert failed == [failing, f"project {env.seed_project_id}"], out
    else:
        assert failed == [failing], out  # one cause, one failure
    assert env.api_key not in out
    assert os.environ.get("LABELBOX_API_KEY", env.api_key) not in out
    assert "check(s) failed: " in out


def test_an_endpoint_that_ignores_if_none_match_fails_the_store_check(
    moto_server: str, s3_bucket: str
) -> None:
    store = S3ObjectStore(s3_bucket, "store", S3Options(endpoint_url=moto_server, retries=2))

    # Stand in for an S3-compatible server without conditional writes: drop the headers.
    def strip_conditions(request: Any, **kwargs: Any) -> None:
        for header in ("If-None-Match", "If-Match"):
            if header in request.headers:
                del request.headers[header]

    store.client.meta.events.register("before-sign.s3.PutObject", strip_conditions)
    check = probe_store(store)
    assert not check.ok
    assert "ignores If-None-Match" in check.detail
