"""Misconfiguration fails `labelhaul sync` before Prefect starts: one line naming the fix."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from labelhaul.emulator import EmulatorServer
from tests.helpers import UNREACHABLE_PREFECT_API

LABELHAUL = [sys.executable, "-m", "labelhaul"]


def _run(
    tmp_path: Path, emu: EmulatorServer, args: list[str], **env: str
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("LABELBOX_", "LABELHAUL_"))}
    base.update(
        # No temporary server: these fail before Prefect (see UNREACHABLE_PREFECT_API).
        PREFECT_API_URL=UNREACHABLE_PREFECT_API,
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        DO_NOT_TRACK="1",
        LABELBOX_API_KEY=emu.api_key,
        LABELBOX_ENDPOINT=emu.graphql_url,
        LABELBOX_REST_ENDPOINT=emu.rest_url,
        AWS_EC2_METADATA_DISABLED="true",  # no instance-metadata probe for credentials
    )
    base.update(env)
    for name, value in env.items():
        if value == "":
            base.pop(name, None)
    return subprocess.run(
        [*LABELHAUL, "sync", *args],
        env=base,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _sync_seed(tmp_path: Path, emu: EmulatorServer, **env: str) -> subprocess.CompletedProcess[str]:
    """`labelhaul sync` of the seed project into `tmp_path / "s"`, with `env` (as `_run`)."""
    return _run(
        tmp_path, emu, ["--project-id", emu.seed_project_id, "--store", str(tmp_path / "s")], **env
    )


def _one_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1, proc.stderr
    # Prefect never started: none of its run lines, no temporary server.
    assert "prefect" not in proc.stderr.lower()
    return lines[0]


@pytest.mark.parametrize(
    ("store", "fix"),
    [("/dev/null/x", "writable path"), ("/proc/x", "writable path")],
)
def test_unwritable_store(emulator: EmulatorServer, tmp_path: Path, store: str, fix: str) -> None:
    proc = _run(tmp_path, emulator, ["--project-id", emulator.seed_project_id, "--store", store])
    line = _one_line(proc)
    assert line.startswith("labelhaul: error:") and fix in line and store in line


def test_s3_store_without_credentials(
    emulator: EmulatorServer, tmp_path: Path, moto_server: str, s3_bucket: str
) -> None:
    proc = _run(
        tmp_path,
        emulator,
        ["--project-id", emulator.seed_project_id, "--store", f"s3://{s3_bucket}/d"],
        AWS_ENDPOINT_URL_S3=moto_server,
        AWS_ACCESS_KEY_ID="",
        AWS_SECRET_ACCESS_KEY="",
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
        AWS_CONFIG_FILE=str(tmp_path / "none"),
    )
    assert "AWS_ACCESS_KEY_ID" in _one_line(proc)


def test_s3_store_with_no_such_bucket(
    emulator: EmulatorServer, tmp_path: Path, moto_server: str
) -> None:
    proc = _run(
        tmp_path,
        emulator,
        ["--project-id", emulator.seed_project_id, "--store", "s3://no-such-bucket-lh/d"],
        AWS_ENDPOINT_URL_S3=moto_server,
    )
    line = _one_line(proc)
    assert "no-such-bucket-lh" in line and "create it" in line


def test_wrong_key(emulator: EmulatorServer, tmp_path: Path) -> None:
    proc = _sync_seed(tmp_path, emulator, LABELBOX_API_KEY="not-the-key")
    line = _one_line(proc)
    assert "LABELBOX_API_KEY" in line and "not-the-key" not in proc.stderr


def test_unknown_project(emulator: EmulatorServer, tmp_path: Path) -> None:
    proc = _run(
        tmp_path,
        emulator,
        ["--project-id", "cnosuchproject0000000000", "--store", str(tmp_path / "s")],
    )
    line = _one_line(proc)
    assert "cnosuchproject0000000000 not found" in line and "member" in line


def test_unknown_model_run(emulator: EmulatorServer, tmp_path: Path) -> None:
    proc = _run(
        tmp_path,
        emulator,
        ["--model-run-id", "cnosuchrun00000000000000", "--store", str(tmp_path / "s")],
    )
    assert "cnosuchrun00000000000000 not found" in _one_line(proc)


@pytest.mark.parametrize("option", ["--project-id", "--model-run-id"])
def test_labelbox_unreachable(emulator: EmulatorServer, tmp_path: Path, option: str) -> None:
    """A LABELBOX_ENDPOINT that refuses connections: one line naming it, the cause and the
    fix. It used to pass the check (a connection error counted as transient), print the
    SDK's own ERROR line, and then name Prefect or retry inside the flow for half a minute.
    Run with Prefect's own default for lines outside a flow run (it warned on each)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}/graphql"
    target = emulator.seed_project_id if option == "--project-id" else emulator.seed_model_run_id
    proc = _run(
        tmp_path,
        emulator,
        [option, target, "--store", str(tmp_path / "s")],
        LABELBOX_ENDPOINT=endpoint,
        PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW="",
    )
    line = _one_line(proc)
    assert line.startswith(f"labelhaul: error: Cannot reach Labelbox at {endpoint} "), line
    assert "(Connection refused): check LABELBOX_ENDPOINT" in line
    assert "HTTPConnectionPool" not in line and "labelhaul doctor" in line


def test_both_id_filters(emulator: EmulatorServer, tmp_path: Path) -> None:
    proc = _run(
        tmp_path,
        emulator,
        [
            "--project-id",
            emulator.seed_project_id,
            "--store",
            str(tmp_path / "s"),
            "--data-row-id",
            "a",
            "--global-key",
            "b",
        ],
    )
    assert "not both" in _one_line(proc)


def _prefect_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The one line a sync prints when Prefect itself is misconfigured (it never ran)."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert lines and lines[-1].startswith("labelhaul: error:"), proc.stderr
    return lines[-1]


@pytest.mark.parametrize("url", [UNREACHABLE_PREFECT_API, "127.0.0.1:4200/api"])
def test_prefect_server_not_running(emulator: EmulatorServer, tmp_path: Path, url: str) -> None:
    """PREFECT_API_URL names a server that is not up (or no URL): one line, not 95 of
    tracebacks from Prefect's client, and nothing is staged or landed."""
    proc = _sync_seed(tmp_path, emulator, PREFECT_API_URL=url)
    store = tmp_path / "s"
    line = _prefect_line(proc)
    assert len([x for x in proc.stderr.splitlines() if x.strip()]) == 1, proc.stderr
    assert url in line and "prefect server start" in line and "PREFECT_API_URL" in line
    # A server still starting refuses connections after printing its banner (seen by hand).
    assert "after its banner" in line
    assert not (store / "datasets").exists() or not any((store / "datasets").iterdir())


def test_invalid_prefect_setting(emulator: EmulatorServer, tmp_path: Path) -> None:
    """A PREFECT_* variable Prefect's settings refuse: the variable, what is wrong, no
    traceback (Prefect prints its own plugin line first; that one is not ours)."""
    proc = _sync_seed(tmp_path, emulator, PREFECT_FLOWS_HEARTBEAT_FREQUENCY="often")
    line = _prefect_line(proc)
    assert "PREFECT_FLOWS_HEARTBEAT_FREQUENCY" in line and "'often'" in line
    assert "valid integer" in line
