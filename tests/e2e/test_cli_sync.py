"""`labelhaul sync` as a user runs it: one temporary server without PREFECT_API_URL; filters, dates.

The first test starts `labelhaul sync` with no PREFECT_API_URL (what it checks is the one
temporary server that starts). The filter and date test runs its four syncs against the
session's Prefect server instead: a temporary server per sync cost it ~60 of its 95 s.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from labelhaul.emulator import EmulatorServer
from tests.fixtures.prefect import migrated_home

pytestmark = pytest.mark.slow

LABELHAUL = [sys.executable, "-m", "labelhaul"]
SERVER_STARTED = "Starting temporary server on"


@pytest.fixture
def cli_emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(api_key="cli-sync-key") as emu:
        yield emu


def _sync(
    emu: EmulatorServer, tmp_path: Path, project_id: str, *args: str, **env_extra: str
) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LABELBOX_", "LABELHAUL_", "PREFECT_"))
    }
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        DO_NOT_TRACK="1",
        LABELBOX_API_KEY=emu.api_key,
        LABELBOX_ENDPOINT=emu.graphql_url,
        LABELBOX_REST_ENDPOINT=emu.rest_url,
        **env_extra,
    )
    store = str(tmp_path / "store")
    return subprocess.run(
        [*LABELHAUL, "sync", "--project-id", project_id, "--store", store, *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _summary(proc: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(json.loads(proc.stdout[proc.stdout.index("{") :]))


def test_a_sync_with_mask_processes_starts_one_temporary_prefect_server(
    cli_emulator: EmulatorServer, tmp_path: Path, migrated_prefect_db: Path
) -> None:
    pid = cli_emulator.add_synthetic_project(n_rows=6, instances=2)
    # Its home's database is a copy of the run's migrated one: the servers counted here
    # are what matters, not migrating from empty (~10 s of CPU; test_cli.py's demo does).
    migrated_home(tmp_path / "prefect-home", migrated_prefect_db)
    proc = _sync(
        cli_emulator,
        tmp_path,
        pid,
        "--mode",
        "full",
        "--json",
        LABELHAUL_MASK_PROCESSES="true",
        LABELHAUL_MASK_BATCH_SIZE="2",  # 3 mask parts over 2 worker processes
    )
    summary = _summary(proc)
    assert summary["mask_runner"] == "processes" and summary["created"]
    # Prefect logs each temporary server it starts, in whichever process starts it.
    assert (proc.stdout + proc.stderr).count(SERVER_STARTED) == 1, proc.stderr[-3000:]


def test_a_mistyped_filter_or_a_naive_date_never_replaces_latest(
    cli_emulator: EmulatorServer, tmp_path: Path, prefect_harness: str
) -> None:
    pid = cli_emulator.seed_project_id
    api = {"PREFECT_API_URL": prefect_harness}
    first = _summary(_sync(cli_emulator, tmp_path, pid, "--mode", "full", "--json", **api))
    assert first["version_id"] == "v000001"
    latest = tmp_path / "store" / pid / "_latest.json"
    before = latest.read_bytes()

    typo = _sync(cli_emulator, tmp_path, pid, "--mode", "full", "--batch-id", "nosuchbatch", **api)
    assert typo.returncode == 0, typo.stderr[-3000:]
    assert "no new version v000001" in typo.stdout
    assert "labelhaul: warning:" in typo.stderr and "0 data rows" in typo.stderr
    assert latest.read_bytes() == before
    assert [p.name for p in (tmp_path / "store" / pid / "versions").iterdir()] == ["v000001"]

    naive = _sync(
        cli_emulator, tmp_path, pid, "--last-activity-start", "2024-01-01T00:00:00", **api
    )
    assert naive.returncode == 1
    assert "has no timezone" in naive.stderr and "LABELHAUL_NAIVE_DATES_AS_UTC" in naive.stderr
    assert "TypeError" not in naive.stderr
    as_utc = _sync(
        cli_emulator,
        tmp_path,
        pid,
        "--last-activity-start",
        "2024-01-01T00:00:00",
        "--json",
        LABELHAUL_NAIVE_DATES_AS_UTC="true",
        **api,
    )
    assert _summary(as_utc)["mode"] == "incremental"
    assert latest.read_bytes() == before  # nothing changed since v000001
